"""No code from data: a prompt folder (MAGV_PROMPTS_DIR, `eval --compare prompts=DIR`) is rendered
in Jinja's immutable sandbox; a template that reaches for Python's internals is refused naming the
file, and no shell command runs. The prompt folder is checked once, up front, naming what is
missing."""

from __future__ import annotations

from pathlib import Path

import pytest

from magv.cli import main
from magv.errors import BadInput
from magv.prompts import load_prompt

PROMPTS = Path(__file__).resolve().parents[2] / "prompts"


def _folder(tmp_path: Path, responder: str) -> Path:
    folder = tmp_path / "prompts"
    folder.mkdir()
    for name in ("investigator", "reverse", "judge"):
        (folder / f"{name}.j2").write_text((PROMPTS / f"{name}.j2").read_text())
    (folder / "responder.j2").write_text(responder)
    return folder


def _escape(marker: Path) -> str:
    return "Hello {{ cycler.__init__.__globals__.os.system('touch " + str(marker) + "') }}\n"


def test_the_escape_is_refused_at_load_naming_the_template_and_runs_nothing(tmp_path, monkeypatch):
    marker = tmp_path / "pwned"
    folder = _folder(tmp_path, _escape(marker))
    monkeypatch.setenv("MAGV_PROMPTS_DIR", str(folder))
    with pytest.raises(BadInput) as err:
        load_prompt("responder").render()
    assert f"{folder / 'responder.j2'}:1" in str(err.value) and "Python internal" in str(err.value)
    assert not marker.exists()


@pytest.mark.parametrize(
    "body",
    [
        "{{ (cycler | attr('__init__')).__globals__ }}",  # the name hidden from a look at the source
        "{% set k = '__in' ~ 'it__' %}{{ cycler[k] }}",
        "{{ question.__class__.__mro__ }}",
        "{{ tools.append('x') }}",  # immutable: a template cannot change a value magv passes
    ],
)
def test_the_sandbox_refuses_at_render_what_the_load_check_cannot_see(tmp_path, monkeypatch, body):
    folder = _folder(tmp_path, body)
    monkeypatch.setenv("MAGV_PROMPTS_DIR", str(folder))
    with pytest.raises(BadInput) as err:
        load_prompt("responder").render(question="q", tools=[])
    assert str(folder / "responder.j2") in str(err.value)


def test_the_shipped_prompts_still_render_in_the_sandbox():
    from magv.prompts import AGENTS, prompts_dir

    shipped = {f.name.removesuffix(".j2") for f in prompts_dir().iterdir() if f.name.endswith(".j2")}
    assert set(AGENTS) <= shipped
    for name in sorted(shipped):
        load_prompt(name)  # parses, and holds no underscore attribute


def test_eval_compare_with_an_escaping_prompt_folder_is_exit_2_before_any_work(tmp_path, monkeypatch, capsys):
    marker = tmp_path / "pwned"
    folder = _folder(tmp_path, _escape(marker))
    monkeypatch.setenv("MAGV_LLM__ENDPOINTS", '["http://127.0.0.1:9/v1"]')
    assert main(["eval", "--limit", "1", "--compare", f"prompts={folder}"]) == 2
    err = capsys.readouterr().err
    assert "responder.j2:1" in err and "Python internal" in err
    assert not marker.exists() and not (tmp_path / "data" / "magv.duckdb").exists()


@pytest.mark.parametrize("where", ["env", "compare"])
def test_a_missing_prompt_folder_is_named_once_before_any_question(tmp_path, monkeypatch, capsys, where):
    missing = tmp_path / "no-such-prompts"
    monkeypatch.setenv("MAGV_LLM__ENDPOINTS", '["http://127.0.0.1:9/v1"]')
    if where == "env":
        monkeypatch.setenv("MAGV_PROMPTS_DIR", str(missing))
        argv = ["eval", "--limit", "2"]
    else:
        argv = ["eval", "--limit", "2", "--compare", f"prompts={missing}"]
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert str(missing) in err and "no such folder" in err
    assert not (tmp_path / "data" / "magv.duckdb").exists()


def test_a_prompt_folder_without_a_file_names_the_file(tmp_path, monkeypatch, capsys):
    folder = _folder(tmp_path, "{{ question }}")
    (folder / "reverse.j2").unlink()
    monkeypatch.setenv("MAGV_PROMPTS_DIR", str(folder))
    monkeypatch.setenv("MAGV_LLM__ENDPOINTS", '["http://127.0.0.1:9/v1"]')
    assert main(["run", "--targets", "1", "--per-target", "1"]) == 2
    err = capsys.readouterr().err
    assert "MAGV_PROMPTS_DIR" in err and "reverse.j2 is missing" in err
    assert not (tmp_path / "data" / "magv.duckdb").exists()
