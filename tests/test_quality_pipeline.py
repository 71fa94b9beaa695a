"""The checks in the pipeline, over the scripted fake server: every generated question is stored
with its check, a repairable one is repaired, a failing one is not kept (investigator) nor answered
(alternate), and the run summary, the report and the data card show the dataset quality."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from magv.cli import main
from magv.store import Store
from tests.fake_agents import MARKER, AgentScript
from tests.pipeline_helpers import fake_pipeline_env

ASSISTANT = "Could you please provide your email address? I'd be happy to help you with your order."
CHAIN = "Where is it? When will it come? Why is it late? Who can I call?"


class FlawedAgents(AgentScript):
    """The scripted agents, with the embedded model's failures: the investigator's second question
    is the assistant's side and its third lacks the customer's values; every first alternate
    chains four requests and drops the identifiers."""

    def _questions(self, prompt: str, n: int):
        reply = super()._questions(prompt, n)
        questions = reply["json"]["questions"]
        if "need exactly these tool calls" in prompt:
            marker = MARKER.search(questions[0]).group(0)
            if n > 1:
                questions[1] = f"{ASSISTANT} {marker}"
            if n > 2:
                questions[2] = f"I have a problem, can you sort it out? {marker}"
        else:
            questions[0] = CHAIN
        return reply


@pytest.mark.integration
def test_checks_repairs_and_dataset_quality_in_run_report_and_card(
    tmp_path, capsys, prefect_harness, monkeypatch
):
    script = FlawedAgents("retail")
    args = ["--targets", "2", "--per-target", "3", "--questions", "4", "--runs", "1", "--alternates", "2"]
    with fake_pipeline_env(tmp_path) as srv:
        srv.handler = script
        assert main(["run", "--no-verify", *args]) == 0
        printed = capsys.readouterr().out
    assert "dataset quality: questions " in printed

    db = tmp_path / "magv.duckdb"
    with Store(db, read_only=True) as store:
        checks = {c["question_id"]: c for c in store.question_checks()}
        investigator = store.questions(origin="investigator")
        alternates = store.questions(origin="alternate")
        assert investigator and alternates and set(checks) == {q.id for q in investigator + alternates}
        by_text = {q.text: checks[q.id] for q in investigator}
        assistant = [c for t, c in by_text.items() if t.startswith(ASSISTANT)]
        assert len(assistant) == 2 and all(not c["passed"] and c["voice"] is False for c in assistant)
        repaired = [c for t, c in by_text.items() if t.startswith("I have a problem")]
        assert len(repaired) == 2 and all(
            c["passed"] and c["repair"].startswith("appended") for c in repaired
        )
        selections = {s["question_id"]: s for s in store.selections()}
        for q in investigator:
            if not checks[q.id]["passed"]:
                assert not selections[q.id]["kept"] and selections[q.id]["reason"].startswith(
                    "failed its checks"
                )
        # the chained alternate is cut to its first request and given the base question's ids
        cut = [checks[a.id] for a in alternates if a.text.startswith("Where is it? ")]
        assert cut and all(c["repair"].startswith("kept the first request") for c in cut)
        counts = store.run_counts()
        assert all(counts.get(a.id, 0) == (1 if checks[a.id]["passed"] else 0) for a in alternates)
        summary = json.loads(store.pipeline_runs()[-1]["summary"])
    assert summary["quality"]["investigator"]["checked"] == len(investigator)

    out = tmp_path / "report"
    assert main(["--database", str(db), "report", "--out", str(out)]) == 0
    html = (out / "report.html").read_text(encoding="utf-8")
    assert '<section id="quality">' in html and "Failures of investigator questions" in html
    assert (
        "voice: the assistant&#39;s side" in html and "I&#39;d be happy to help you with your order" in html
    )
    assert "kept the first request" in html
    metrics = json.loads((out / "metrics.json").read_text(encoding="utf-8"))
    assert metrics["quality"]["investigator"]["kept_rates"]["voice"] == 1.0

    monkeypatch.chdir(tmp_path)
    assert main(["--database", str(db), "export", "--out", "all.jsonl", "--json"]) == 0
    card = Path("all.jsonl.card.md").read_text(encoding="utf-8")
    assert "## Dataset quality" in card and "| investigator |" in card


@pytest.mark.integration
def test_the_demo_report_has_the_dataset_quality_section(tmp_path, capsys, monkeypatch, prefect_harness):
    """`magv demo`'s stages (pipeline, judge, score, report as subprocesses) on the fake server:
    the pipeline prints its dataset quality and the report holds the section with its failures."""
    from prefect.settings import PREFECT_API_URL

    from magv.commands import demo
    from magv.config import load_settings

    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv(
        "PREFECT_API_URL", PREFECT_API_URL.value()
    )  # the subprocesses use the harness's server
    monkeypatch.setenv("MAGV_PIPELINE__MAX_STEPS", "3")
    with fake_pipeline_env(tmp_path, domain=demo.DEMO_DOMAIN) as srv:
        srv.handler = FlawedAgents(demo.DEMO_DOMAIN)
        demo.stages(load_settings(), ["--domain", demo.DEMO_DOMAIN, *demo.DEFAULT_ARGS])
    out = capsys.readouterr().out
    assert "dataset quality: questions " in out
    html = (tmp_path / "report" / "report.html").read_text(encoding="utf-8")
    assert '<section id="quality">' in html and "Failures of investigator questions" in html
    assert "I&#39;d be happy to help you with your order" in html
