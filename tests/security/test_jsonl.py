"""JSONL in and out: lines split on "\\n" only, and what magv writes is always valid JSON."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from magv.cli import main
from magv.errors import BadInput
from magv.jsonl import dumps_line, loads_line, read_jsonl
from magv.store import Store

FIXTURES = Path(__file__).resolve().parent.parent / "fixtures"
SEPARATORS = "\u2028\u2029\u0085\x0b\x0c\x1c\x1d\x1e\r"


def test_lines_split_on_newline_only(tmp_path):
    path = tmp_path / "x.jsonl"
    text = f"line with {SEPARATORS} inside"
    path.write_text(json.dumps({"a": text}, ensure_ascii=False) + "\n" + json.dumps({"b": 1}) + "\n")
    assert [(n, v) for n, _, v in read_jsonl(path)] == [(1, {"a": text}), (2, {"b": 1})]


@pytest.mark.parametrize(
    "value", [float("nan"), float("inf"), float("-inf"), {"x": [1, float("nan")]}, "\ud800"]
)
def test_what_magv_writes_refuses_what_json_cannot_hold(value):
    with pytest.raises(ValueError, match="not valid JSON"):
        dumps_line(value)


def test_written_text_keeps_line_separators_inside_one_line():
    line = dumps_line({"a": SEPARATORS})
    assert "\n" not in line and loads_line(line, "x:1") == {"a": SEPARATORS}


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ('{"a": NaN}', "x:1: a: NaN is not valid JSON"),
        ('{"a": [1, Infinity]}', "x:1: a[1]: Infinity is not valid JSON"),
        ('{"a": {"b": -Infinity}}', "x:1: a.b: -Infinity is not valid JSON"),
        ('{"a": {"b": 1e400}}', "x:1: a.b: inf is not valid JSON"),
        ('{"a": "\\ud800"}', "x:1: a: text holds a lone surrogate"),
        ('{"\\udfff": 1}', "x:1: \\udfff: the key holds a lone surrogate"),
        ('{"a": [' + "1" * 25 + "]}", "x:1: a[0]: integer 1111111111111111111111111 is out of range"),
        ("[" * 100_000 + "]" * 100_000, "x:1: JSON nested too deeply"),
        ("[" * 70 + "]" * 70, "nested more than 64 levels deep"),
        ('{"a": ' + "9" * 5000 + "}", "x:1: not valid JSON: Exceeds the limit"),
    ],
    ids=[
        "nan",
        "infinity",
        "-infinity",
        "overflow",
        "surrogate",
        "surrogate key",
        "int64",
        "100000 deep",
        "70 deep",
        "5000 digits",
    ],  # fmt: skip
)
def test_a_line_json_cannot_hold_is_refused_naming_line_and_field(raw, expected):
    with pytest.raises(BadInput) as info:
        loads_line(raw, "x:1")
    assert expected in str(info.value)


def test_export_import_round_trip_keeps_u2028(tmp_path, monkeypatch, capsys):
    """A question, a tool argument and a tool result holding U+2028 come back the same."""
    lines = [json.loads(x) for x in (FIXTURES / "import_multiturn.jsonl").read_text().splitlines()]
    odd = "Where\u2028is my order\u2029 1042?\u0085"
    for line in lines:
        if line["question_id"] == "conv-1":
            line["question"] = odd
            line["messages"][1]["content"][0]["text"] = odd
            line["messages"][3]["content"] = json.dumps({"status": "shipped\u2028today", "city": "Lyon"})
    source = tmp_path / "in.jsonl"
    source.write_text("".join(json.dumps(x, ensure_ascii=False) + "\n" for x in lines), encoding="utf-8")
    first, second = tmp_path / "a.duckdb", tmp_path / "b.duckdb"
    monkeypatch.setenv("MAGV_DATABASE", str(first))
    assert main(["import", "trajectories", str(source)]) == 0
    exported = tmp_path / "out.jsonl"
    assert main(["export", "--format", "jsonl", "--out", str(exported)]) == 0
    assert "\u2028" in exported.read_text(encoding="utf-8")  # raw, as JSON allows
    monkeypatch.setenv("MAGV_DATABASE", str(second))
    assert main(["import", "trajectories", str(exported)]) == 0, capsys.readouterr().err
    with Store(first, read_only=True) as a, Store(second, read_only=True) as b:
        assert sorted(q.text for q in a.questions()) == sorted(q.text for q in b.questions())
        assert odd in {q.text for q in b.questions()}
        assert sorted(r.trajectory.model_dump_json() for r in a.runs()) == sorted(
            r.trajectory.model_dump_json() for r in b.runs()
        )


def test_export_refuses_an_existing_file_unless_forced(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("MAGV_DATABASE", str(tmp_path / "a.duckdb"))
    assert main(["import", "trajectories", str(FIXTURES / "import_multiturn.jsonl")]) == 0
    out = tmp_path / "out.jsonl"
    out.write_text("keep me")
    capsys.readouterr()
    assert main(["export", "--out", str(out)]) == 2
    assert f"export: {out} already exists; choose a new path or pass --force" in " ".join(
        capsys.readouterr().err.split()
    )
    assert out.read_text() == "keep me"
    assert main(["export", "--out", str(out), "--force"]) == 0
    assert out.read_text().count("\n") == len((FIXTURES / "import_multiturn.jsonl").read_text().splitlines())
