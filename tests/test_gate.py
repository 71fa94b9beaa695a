"""CI gates: `magv eval --fail-under METRIC=SHARE` and `magv verify score --fail-under SHARE` exit 1
below the bar, naming what fell, and 0 at or above it; bad bars exit 2 before any work."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from magv.cli import main
from magv.domains import load_domain
from magv.errors import BadInput
from magv.gate import parse_bars, shortfalls
from magv.store import Store
from tests.fake_agents import AgentScript
from tests.fakellm import FakeLLMServer
from tests.verify_helpers import synthetic_store


def test_parse_bars_and_shortfalls():
    bars = parse_bars(["strict=0.6", "valid_calls=0.9,answered=1"], ["strict", "valid_calls", "answered"])
    assert bars == {"strict": 0.6, "valid_calls": 0.9, "answered": 1.0}
    assert shortfalls({"strict": 0.5, "valid_calls": 0.95, "answered": None}, bars, "A") == [
        "A: strict 0.5 < 0.6",
        "A: answered was not measured (bar 1)",
    ]
    assert shortfalls({"strict": 0.6}, {"strict": 0.6}) == []  # at the bar passes
    for bad, word in (("strict", "METRIC=VALUE"), ("strictt=0.5", "not one of"), ("strict=x", "not a number"),
                      ("strict=60", "between 0 and 1")):  # fmt: skip
        with pytest.raises(BadInput, match=word):
            parse_bars([bad], ["strict"])


def _eval(tmp_path: Path, monkeypatch, wrong_question_rate: float, *extra: str) -> int:
    seeds = load_domain("retail").seeds()[:3]
    lines = [json.dumps({"id": s.id, "question": f"{s.question} [{s.id}]", "trajectory": [c.model_dump() for c in s.trajectory]})
             for s in seeds]  # fmt: skip
    (tmp_path / "q.jsonl").write_text("\n".join(lines) + "\n")
    monkeypatch.chdir(tmp_path)
    with FakeLLMServer(
        AgentScript("retail", wrong_question_rate=wrong_question_rate, wrong_run_rate=0)
    ) as srv:
        monkeypatch.setenv("MAGV_LLM__ENDPOINTS", json.dumps([srv.base_url]))
        return main(["eval", "--questions", str(tmp_path / "q.jsonl"), *extra])


def test_eval_gate_passes_at_or_above_the_bar(tmp_path, monkeypatch, capsys):
    assert _eval(tmp_path, monkeypatch, 0.0, "--fail-under", "strict=0.6", "--json") == 0
    out = json.loads(capsys.readouterr().out)
    assert out["configs"][0]["summary"]["strict"] == 1.0
    assert out["gate"] == {"fail_under": {"strict": 0.6}, "passed": True, "below": []}


def test_eval_gate_fails_below_the_bar_and_says_what_fell(tmp_path, monkeypatch, capsys):
    assert (
        _eval(tmp_path, monkeypatch, 1.0, "--fail-under", "strict=0.6", "--fail-under", "valid_calls=0") == 1
    )
    captured = capsys.readouterr()
    assert "below the bar: demos=0: strict 0 < 0.6" in captured.err
    assert "valid_calls" not in captured.err  # a metric that met its bar is not listed
    assert "metric(s) below --fail-under" in captured.err
    assert "strict" in captured.out  # the results are still printed


def test_eval_bad_bar_exits_2_before_any_model_call(tmp_path, capsys):
    assert main(["eval", "--fail-under", "steps=3"]) == 2
    err = capsys.readouterr().err
    assert "'steps' is not one of" in err and "strict" in err
    assert not (tmp_path / "data").exists()


@pytest.fixture
def scored_store(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    store = Store(tmp_path / "data" / "magv.duckdb")
    synthetic_store(store, n_questions=45)
    store.close()
    for step in (["verify", "features", "--no-alternates", "--json"], ["verify", "label", "--json"],
                 ["verify", "train", "--json"]):  # fmt: skip
        assert main(step) == 0
    return tmp_path


def test_verify_score_gate_both_outcomes(scored_store, capsys):
    capsys.readouterr()
    assert main(["verify", "score", "--json"]) == 0
    scored = json.loads(capsys.readouterr().out)
    share = scored["correct"] / scored["scored"]
    assert 0 < share < 1
    assert main(["verify", "score", "--fail-under", f"{share:.4f}"[:-1]]) == 0  # just at or under the share
    assert "gate passed" in capsys.readouterr().err
    assert main(["verify", "score", "--fail-under", f"{min(1.0, share + 0.01):.4f}"]) == 1
    err = capsys.readouterr().err
    assert f"({scored['correct']}/{scored['scored']})" in err and "below the bar" in err
    assert main(["verify", "score", "--fail-under", "1.5"]) == 2
