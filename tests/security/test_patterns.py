"""Patterns and documents from users are data: a grounded-id pattern is matched in time linear in
the text (RE2) and refused at load, naming tool and parameter, when it cannot be; a TOML document
nested 100,000 deep is a clear error naming the file; `--config` naming a FIFO or a directory says
what it is."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest

from magv.cli import main
from magv.domains.tools import make_tool
from magv.errors import BadInput
from magv.llm.grounding import MAX_PATTERN, check_grounded, ground, values_in
from magv.models import GROUNDED, ToolSpec

USER_DOMAIN = Path(__file__).resolve().parents[1] / "fixtures" / "user_domain"


def _spec(pattern: object) -> ToolSpec:
    return ToolSpec(name="lookup", description="Look an id up.", parameters={
        "type": "object", "properties": {"order_id": {"type": "string", GROUNDED: pattern}},
        "required": ["order_id"]})  # fmt: skip


def test_catastrophic_backtracking_is_matched_in_linear_time():
    """`^(a+)+$` on forty a's and a '!' backtracks for hours in Python's re; in a subprocess, so a
    regression fails here instead of hanging the suite."""
    code = (
        "import time; from magv.llm.grounding import values_in, ground\n"
        "t = time.perf_counter()\n"
        "assert values_in('^(a+)+$', ['a' * 40 + '!', 'a' * 100_000 + '!']) == []\n"
        "p = {'type': 'object', 'properties': {'x': {'type': 'string', 'x-magv-grounded': '^(a+)+$'}}, 'required': ['x']}\n"
        "assert ground(p, ['a' * 40 + '!']) is None\n"
        "print(time.perf_counter() - t)\n"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    assert float(proc.stdout.strip().splitlines()[-1]) < 1.0


def test_a_safe_pattern_still_finds_its_ids():
    assert values_in(r"\bW\d{7}\b", ["order W1000123 and W1000124", "W1000123 again"]) == [
        "W1000124",
        "W1000123",
    ]
    narrowed = ground(_spec(r"\bW\d{7}\b").parameters, ["my order is W1234567"])
    assert narrowed["properties"]["order_id"]["enum"] == ["W1234567"]


@pytest.mark.parametrize(
    ("pattern", "words"),
    [
        ("a{4294967296}", "not a regular expression"),  # an OverflowError traceback before
        (r"(a)\1", "bounded time"),  # backreference
        (r"(?=a)a", "bounded time"),  # lookahead
        ("a{2000}", "bounded time"),  # RE2 counts at most 1000
        ("(" * 10 + "a", "not a regular expression"),
        ("a" * (MAX_PATTERN + 1), f"at most {MAX_PATTERN}"),
    ],
)
def test_an_unsafe_or_broken_pattern_is_refused_at_load_naming_the_parameter(pattern, words):
    with pytest.raises(BadInput) as err:
        make_tool(_spec(pattern), lambda **kw: {})
    message = str(err.value)
    assert "tool lookup" in message and "'order_id'" in message and words in message


def test_the_builtin_domains_patterns_pass_the_check():
    from magv.domains import load_domain

    for name in ("retail", "logs"):
        for tool in load_domain(name).tools:
            spec = getattr(tool, "spec", tool)
            check_grounded(spec.parameters, f"tool {spec.name}")


def test_the_tracking_number_pattern_keeps_its_meaning_without_a_lookahead():
    from magv.domains.retail.tools import TRACKING_NUMBER

    text = "track 1Z999AA10123456784 or 9400111899223344556677 not CONFIRMATIONNUMBER nor A1B2C3"
    assert values_in(TRACKING_NUMBER, [text]) == ["1Z999AA10123456784", "9400111899223344556677"]


def test_domain_check_refuses_an_unsafe_pattern_of_a_folder_domain(tmp_path, capsys):
    folder = shutil.copytree(USER_DOMAIN, tmp_path / "dom")
    toml = folder / "domain.toml"
    text = toml.read_text()
    text = text.replace(
        'parameters.member_id = { type = "string", pattern = "^M[0-9]{3}$" }',
        "parameters.member_id = { type = \"string\", x-magv-grounded = '(M)\\1' }",
        1,
    )
    assert "x-magv-grounded" in text
    toml.write_text(text)
    assert main(["domain", "check", str(folder)]) == 2
    err = capsys.readouterr().err
    assert "list_member_loans" in err and "member_id" in err and "bounded time" in err


# -- documents --------------------------------------------------------------------------------------


def _deep_toml(key: str = "x", depth: int = 100_000) -> str:
    return f"{key} = " + "[" * depth + "]" * depth + "\n"


def test_a_config_file_nested_100000_deep_names_the_file(tmp_path, capsys):
    path = tmp_path / "magv.toml"
    path.write_text(_deep_toml("domain"))
    assert main(["--config", str(path), "config", "show"]) == 2
    err = capsys.readouterr().err
    assert str(path) in err and "nested too deeply" in err and "Traceback" not in err


def test_a_config_file_nested_past_the_limit_but_parsable_names_the_field(tmp_path, capsys):
    path = tmp_path / "magv.toml"
    path.write_text(_deep_toml("domain", 200))
    assert main(["--config", str(path), "config", "show"]) == 2
    err = capsys.readouterr().err
    assert str(path) in err and "domain" in err and "nested" in err


def test_a_domain_toml_nested_100000_deep_names_the_file(tmp_path, capsys):
    folder = shutil.copytree(USER_DOMAIN, tmp_path / "dom")
    toml = folder / "domain.toml"
    toml.write_text(toml.read_text() + "\n[extra]\n" + _deep_toml("deep"))
    assert main(["domain", "check", str(folder)]) == 2
    err = capsys.readouterr().err
    assert str(toml) in err and "nested too deeply" in err


def test_an_environment_value_nested_100000_deep_is_a_clear_error(monkeypatch, capsys):
    monkeypatch.setenv("MAGV_LLM__ENDPOINTS", "[" * 100_000 + "]" * 100_000)
    assert main(["config", "show"]) == 2
    err = capsys.readouterr().err
    assert "MAGV_LLM__ENDPOINTS" in err or "nested too deeply" in err


def test_config_naming_a_directory_or_a_fifo_says_what_it_is(tmp_path, capsys):
    assert main(["--config", str(tmp_path), "config", "show"]) == 2
    assert "is a directory" in capsys.readouterr().err
    fifo = tmp_path / "cfg.fifo"
    os.mkfifo(fifo)
    started = time.monotonic()
    assert main(["--config", str(fifo), "config", "show"]) == 2  # refused, not opened (it would block)
    assert "is a FIFO" in capsys.readouterr().err and time.monotonic() - started < 10
    assert main(["--config", str(tmp_path / "none.toml"), "config", "show"]) == 2
    assert "not found" in capsys.readouterr().err
