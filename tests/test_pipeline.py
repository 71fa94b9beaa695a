"""The generation half end to end: Prefect flows over the scripted fake server (fast) and the real
embedded model (slow)."""

from __future__ import annotations

import json

import pytest

from magv.cli import main
from magv.store import Store
from tests.pipeline_helpers import fake_pipeline_env, table_counts

SMALL = ["--targets", "4", "--per-target", "4", "--questions", "8", "--runs", "3", "--alternates", "2"]


def _run(args, capsys) -> dict:
    rc = main(["run", "--no-verify", "--json", *args])
    out = capsys.readouterr().out
    assert rc == 0, out
    return json.loads(out)


@pytest.mark.integration
def test_pipeline_on_the_fake_server_fills_every_table(tmp_path, capsys, prefect_harness):
    with fake_pipeline_env(tmp_path):
        summary = _run(SMALL, capsys)
    assert set(summary["stages"]) == {"generate", "select", "respond", "reverse", "respond_alternates"}
    with Store(tmp_path / "magv.duckdb", read_only=True) as store:
        investigator = store.questions(origin="investigator")
        assert len(investigator) == 16 and all(q.target and q.seed_id for q in investigator)
        assert all(q.example_seed_id and q.example_seed_id != q.seed_id for q in investigator)
        kept = store.questions(origin=("seed", "investigator"), kept_only=True)
        assert len(kept) == 8 + 4  # selection's target count, plus the 4 target seeds
        dropped = [s for s in store.selections() if not s["kept"]]
        assert dropped and all(s["reason"] for s in dropped)
        counts = store.run_counts()
        assert all(counts[q.id] == 3 for q in kept)  # R runs per question
        mct = {m["question_id"]: m for m in store.mct()}
        assert set(mct) >= {q.id for q in kept}
        assert all(0 < mct[q.id]["share"] <= 1 and mct[q.id]["n_runs"] == 3 for q in kept)
        alternates = store.questions(origin="alternate")
        assert len(alternates) == 2 * len(kept)
        by_id = {q.id: q for q in kept}
        assert all(a.parent_id in by_id and a.group_id == by_id[a.parent_id].group_id for a in alternates)
        assert all(counts[a.id] == 1 for a in alternates)
        calls = store.llm_calls()
        assert {c["role"] for c in calls} == {"investigator", "responder", "reverse"}
        assert all(c["template_hash"] for c in calls)
        # the scripted responder follows the gold trajectory for most questions: some MCTs match
        runs = {r.id: r for r in store.runs()}
        matches = sum(
            runs[mct[q.id]["run_id"]].trajectory.tool_names() == [c.name for c in q.target] for q in kept
        )
        assert 0 < matches < len(kept) or matches == len(kept)


@pytest.mark.integration
def test_rerun_inserts_nothing_and_pays_for_nothing(tmp_path, capsys, prefect_harness):
    with fake_pipeline_env(tmp_path) as srv:
        _run(SMALL, capsys)
        first = table_counts(tmp_path / "magv.duckdb")
        sent = srv.counts["chat"]
        again = _run(SMALL, capsys)
        assert table_counts(tmp_path / "magv.duckdb") == first
        assert all(s["planned"] == 0 for name, s in again["stages"].items() if name != "select")
        assert srv.counts["chat"] == sent


@pytest.mark.integration
def test_a_run_stopped_midway_resumes_to_the_same_rows(tmp_path, capsys, prefect_harness, monkeypatch):
    """Stop the flow (as Ctrl-C does) after the first chunks of the respond stage are written,
    rerun, and compare with an uninterrupted run in another database."""
    import dataclasses

    from magv.pipeline import respond, runner

    args = [*SMALL, "--questions", "12"]
    full = tmp_path / "full"
    full.mkdir()
    with fake_pipeline_env(full):
        monkeypatch.setenv("MAGV_PIPELINE__CHUNK_SIZE", "3")
        _run(args, capsys)
    expected = table_counts(full / "magv.duckdb")

    part = tmp_path / "part"
    part.mkdir()
    original = respond.write
    written = {"n": 0}

    def write_then_stop(store, ctx, results, report):
        original(store, ctx, results, report)
        written["n"] += 1
        if written["n"] == 2:
            raise KeyboardInterrupt

    with fake_pipeline_env(part):
        stopping = dataclasses.replace(respond.STAGE, write=write_then_stop)
        monkeypatch.setitem(runner.STAGES, "respond", stopping)
        assert main(["run", "--no-verify", "--json", *args]) == 130
        capsys.readouterr()
        partial = table_counts(part / "magv.duckdb")
        assert 0 < partial["runs"] < expected["runs"]
        monkeypatch.setitem(runner.STAGES, "respond", respond.STAGE)
        _run(args, capsys)
    assert table_counts(part / "magv.duckdb") == expected
    with Store(part / "magv.duckdb", read_only=True) as store:
        ids = [r["id"] for r in store.query("SELECT id FROM runs")]
        assert len(ids) == len(set(ids))
        paid = store.query(
            "SELECT key, count(*) AS n FROM llm_calls WHERE error IS NULL GROUP BY key HAVING n > 1"
        )
        assert paid == []


@pytest.mark.slow
@pytest.mark.integration
def test_pipeline_on_the_embedded_model(tmp_path, capsys, prefect_harness, llama_server, monkeypatch):
    """The real thing, small: gemma-3-270m through llama.cpp's server, real sentence embeddings."""
    monkeypatch.setenv("MAGV_LLM__ENDPOINTS", json.dumps([llama_server.url]))
    monkeypatch.setenv("MAGV_DATABASE", str(tmp_path / "magv.duckdb"))
    monkeypatch.setenv("MAGV_DOMAIN_DATA_DIR", str(tmp_path / "domains"))
    monkeypatch.setenv("MAGV_PIPELINE__MAX_STEPS", "3")
    summary = _run(
        ["--targets", "2", "--per-target", "2", "--questions", "3", "--runs", "2", "--alternates", "1"],
        capsys,
    )
    with Store(tmp_path / "magv.duckdb", read_only=True) as store:
        counts = store.counts()
        assert counts["questions"] > 2 and counts["runs"] > 0 and counts["llm_calls"] > 0
        calls = store.llm_calls()
        assert all(c["prompt_tokens"] > 0 for c in calls if not c["error"])
        kept = store.questions(origin=("seed", "investigator"), kept_only=True)
        assert all(store.run_counts().get(q.id) == 2 for q in kept)
    assert summary["stages"]["respond"]["done"] + summary["stages"]["respond"]["failed"] == len(kept)


@pytest.mark.integration
def test_whole_pipeline_with_verifier_then_report(tmp_path, capsys, prefect_harness):
    """What `make demo` does, on the fake server: generation, verification, then the report."""
    args = ["--targets", "6", "--per-target", "4", "--questions", "12", "--runs", "3", "--alternates", "2"]
    with fake_pipeline_env(tmp_path):
        rc = main(["run", "--json", *args])
        summary = json.loads(capsys.readouterr().out)
        assert rc == 0
        for stage in ("features", "gold_labels", "train", "score"):
            assert summary["stages"][stage]["failed"] == 0, summary["stages"][stage]
        assert main(["verify", "train", "--json"]) == 0
        table = json.loads(capsys.readouterr().out)
        from magv.verify.models import candidate_names

        assert {m["name"] for m in table["models"]} == set(candidate_names())
        assert {"logreg", "text", "logreg + text", "agreement + text"} <= set(candidate_names())
        assert main(["report", "--out", str(tmp_path / "report")]) == 0
        out = capsys.readouterr().out
    assert str(tmp_path / "report") in out
    html = (tmp_path / "report" / "report.html").read_text()
    assert "Worst cases" in html or "worst" in html.lower()
    with Store(tmp_path / "magv.duckdb", read_only=True) as store:
        counts = store.counts()
        kept = store.questions(origin=("seed", "investigator"), kept_only=True)
    assert counts["features"] >= len(kept) - 1 and counts["labels"] >= len(kept) - 1
    assert counts["predictions"] >= counts["features"] - 1


@pytest.mark.integration
def test_a_run_whose_stage_failed_is_completed_with_errors_and_exits_1(tmp_path, capsys, prefect_harness):
    """One target, one kept question, one run each and no alternates: the verifier has nothing to
    train on, so the run says which stage failed and why, and stores the reason with the stage."""
    with fake_pipeline_env(tmp_path):
        rc = main(["run", "--json", "--targets", "1", "--questions", "1", "--runs", "1", "--alternates", "0"])
    captured = capsys.readouterr()
    assert rc == 1
    result = json.loads(captured.out)
    assert result["status"] == "completed_with_errors"
    assert "stage train failed" in captured.err
    assert "score" not in result["stages"]  # nothing to score with
    with Store(tmp_path / "magv.duckdb", read_only=True) as store:
        [run] = store.pipeline_runs()
    stages = json.loads(run["stages"]) if isinstance(run["stages"], str) else run["stages"]
    assert run["status"] == "completed_with_errors"
    reason = stages["train"]["errors"][0]
    assert stages["train"]["error"] and " ".join(reason.split()) in " ".join(captured.err.split())
    assert stages["respond"]["error"] is None and stages["respond"]["done"] == 2


@pytest.mark.integration
def test_generation_is_sized_to_the_kept_count_and_its_cost_is_printed(tmp_path, capsys, prefect_harness):
    args = ["run", "--no-verify", "--targets", "4", "--questions", "4", "--runs", "1", "--alternates", "0"]
    with fake_pipeline_env(tmp_path):
        assert main(args) == 0
        first = capsys.readouterr().out
        with Store(tmp_path / "magv.duckdb", read_only=True) as store:
            assert len(store.questions(origin="investigator")) == 4 * 2  # ceil(2 x 4 kept / 4 targets)
        # before any work: the plan, its calls, no time (the call log is empty)
        assert first.index("plan: 4 targets x 2 questions, keep 4") < first.index("generate: 4 to do")
        assert "respond: 8 runs, up to 56 responder LLM calls" in first  # (4 kept + 4 seeds) x (6 + 1)
        assert "s a call" not in first.split("generate: 4 to do")[0]
        # an explicit --per-target wins; now the log has latencies, so the plan has a time too
        assert main([*args, "--per-target", "3"]) == 0
        second = capsys.readouterr().out
        with Store(tmp_path / "magv.duckdb", read_only=True) as store:
            asked = sorted(g["n_questions"] for g in store.generations() if g["kind"] == "investigator")
    assert asked == [2] * 4 + [3] * 4  # a new generation per target, asked for 3
    assert "plan: 4 targets x 3 questions" in second
    assert "investigator LLM calls, about" in second and "s a call" in second
