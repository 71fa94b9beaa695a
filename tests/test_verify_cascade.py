"""`magv verify cascade` on the fake LLM server: every step decides something in a case built for
it, the budgets hold, decisions are stored and a rerun redoes nothing; `annotate --uncertain`."""

from __future__ import annotations

import json
import math
import os
import shutil
from pathlib import Path

import numpy as np
import pytest

from magv.cascade.rules import cost_curve, rule_decisions
from magv.cli import main
from magv.models import Label
from magv.store import Store
from magv.verify.active import learning_curve, uncertain_annotations, uncertain_order
from tests.pipeline_helpers import fake_pipeline_env

PIPELINE = ["run", "--no-verify", "--json", "--targets", "4", "--per-target", "4", "--questions", "12",
            "--runs", "3", "--alternates", "0"]  # fmt: skip


def _cli(args, capsys) -> dict:
    rc = main([*args, "--json"])
    out = capsys.readouterr().out
    assert rc == 0, out
    return json.loads(out)


def _register_alternates_model(store: Store, models_dir: Path) -> str:
    """A logistic regression that is unsure (p near 0.5) about a row without alternates and sure
    (p near 1) about one with them: the constructed case where alternates decide."""
    from magv.verify.features import FEATURE_NAMES, FEATURE_VERSION
    from magv.verify.models import Verifier, save_model

    names = list(FEATURE_NAMES)
    _, X = store.feature_matrix(FEATURE_VERSION, names)
    without, with_alt = X.copy(), X.copy()
    for col, value in (("n_alternates", 0.0), ("n_alternate_runs", 0.0)):
        without[:, names.index(col)] = value
    for col, value in (("n_alternates", 2.0), ("n_alternate_runs", 2.0)):
        with_alt[:, names.index(col)] = value
    X_train = np.vstack([without, without, with_alt])
    y = np.array([0] * len(X) + [1] * len(X) + [1] * len(X))
    verifier = Verifier("logreg", random_state=0).fit(X_train, y)
    model_id = "constructed-alternates"
    path = models_dir / f"{model_id}.skops"
    save_model(path, verifier, names, FEATURE_VERSION, model_id=model_id, name="logreg", calibrated=False)
    store.add_verifier_model({"id": model_id, "name": "logreg", "path": str(path), "feature_version": FEATURE_VERSION,
                              "features": names, "metrics": {}})  # fmt: skip
    return model_id


@pytest.fixture(scope="module")
def base(tmp_path_factory, prefect_harness):
    """A pipeline on the fake server without alternates, features, gold labels, the constructed
    model registered and scoring every row."""
    root = tmp_path_factory.mktemp("cascade")
    models = root / "models"
    os.environ["MAGV_VERIFY__MODELS_DIR"] = str(models)
    try:
        with fake_pipeline_env(root):
            assert main(PIPELINE) == 0
            for args in (["verify", "features"], ["verify", "label"]):
                assert main([*args, "--json"]) == 0
            with Store(root / "magv.duckdb") as store:
                model_id = _register_alternates_model(store, models)
            assert main(["verify", "score", "--model", model_id, "--json"]) == 0
    finally:
        os.environ.pop("MAGV_VERIFY__MODELS_DIR", None)
    return root


@pytest.fixture
def env(base, tmp_path, monkeypatch, capsys):
    """A copy of the base store, with the fake server and the settings pointing at it."""
    for name in ("magv.duckdb", "domains"):
        src = base / name
        (shutil.copytree if src.is_dir() else shutil.copy)(src, tmp_path / name)
    monkeypatch.setenv("MAGV_VERIFY__MODELS_DIR", str(base / "models"))
    capsys.readouterr()
    with fake_pipeline_env(tmp_path) as srv:
        yield tmp_path, srv


def _report(db: Path, out: Path) -> dict | None:
    from magv.report.html import write_report

    with Store(db, read_only=True) as store:
        files = write_report(store, out)
    html = files.html.read_text()
    section = json.loads(files.metrics.read_text())["cascade"]
    assert (section is None) == ('id="cascade"' not in html)
    return section


def _tokens(db: Path, roles: tuple[str, ...], since=None) -> int:
    with Store(db, read_only=True) as store:
        rows = [
            c for c in store.llm_calls() if c["role"] in roles and (since is None or c["created_at"] >= since)
        ]
    return sum((c["prompt_tokens"] or 0) + (c["completion_tokens"] or 0) for c in rows)


@pytest.mark.integration
def test_alternates_decide_within_the_token_budget_and_a_rerun_redoes_nothing(env, capsys):
    tmp, srv = env
    db = tmp / "magv.duckdb"
    assert _report(db, tmp / "before") is None  # no cascade yet: no section
    before = _tokens(db, ("reverse", "responder"))
    limit = 20000
    out = _cli(["verify", "cascade", "--no-judge", "--max-llm-tokens", str(limit)], capsys)
    spent = _tokens(db, ("reverse", "responder")) - before
    assert 0 < spent <= limit and out["tokens_spent"] <= limit  # the log agrees: never above the max
    assert out["decided_by"].get("alternates", 0) >= 1
    # it stopped for the budget, not for lack of rows
    assert any("token budget" in s for s in out["budget_stops"])
    with Store(db, read_only=True) as store:
        decisions = {d["run_id"]: d for d in store.cascade_decisions()}
        n_rows = out["trajectories"]
        assert len(decisions) == n_rows
        by_alt = [d for d in decisions.values() if d["step"] == "alternates"]
        # each carries its own reverse-engineer call and alternate runs
        assert all(d["calls"] >= 3 and d["costs"]["alternates"]["prompt_tokens"] > 0 for d in by_alt)
        # the constructed model is sure once alternates exist
        assert all(d["correct"] is True for d in by_alt)
        queued = [d for d in decisions.values() if d["correct"] is None]
        assert queued and all(d["step"] == "human" for d in queued)
    assert sum(d["prompt_tokens"] + d["completion_tokens"] for d in decisions.values()) == spent

    chats = srv.counts["chat"]
    again = _cli(["verify", "cascade", "--no-judge", "--no-alternates"], capsys)
    assert again["pending_at_start"] == len(queued) and srv.counts["chat"] == chats
    with Store(db, read_only=True) as store:
        after = {d["run_id"]: d for d in store.cascade_decisions()}
    assert {k: v["step"] for k, v in after.items() if v["correct"] is not None} == {
        k: v["step"] for k, v in decisions.items() if v["correct"] is not None
    }
    points = again["curve"]["points"]
    assert [p["step"] for p in points] == ["agreement", "verifier", "alternates", "judge", "human"]
    assert points[2]["tokens"] == spent and points[2]["calls_per_1000"] > 0
    assert all(a["tokens"] <= b["tokens"] for a, b in zip(points, points[1:]))  # cumulative

    # a human answers one row of the queue: the next cascade takes the answer
    answered = queued[0]["run_id"]
    with Store(db) as store:
        store.add_labels([Label(run_id=answered, source="human", correct=False)])
    third = _cli(["verify", "cascade", "--no-judge", "--no-alternates"], capsys)
    assert third["decided_by"] == {"human": 1} and third["queued_for_human"] == len(queued) - 1
    with Store(db, read_only=True) as store:
        row = next(d for d in store.cascade_decisions() if d["run_id"] == answered)
    assert row["step"] == "human" and row["correct"] is False and row["detail"] == "human label"
    points = third["curve"]["points"]

    section = _report(db, tmp / "after")
    assert section["curve"]["points"] == points, (section["curve"]["points"], points)
    assert section["queued_for_human"] == len(queued) - 1
    assert section["by_step"]["alternates"] == out["decided_by"]["alternates"]
    html = (tmp / "after" / "report.html").read_text()
    assert 'id="cascade"' in html and 'id="fig-cascade_curve"' in html and 'data-step="alternates"' in html
    assert section["learning_curve"]["points"] and 'id="fig-learning_curve"' in html


@pytest.mark.integration
def test_judge_share_and_tokens_are_never_above_their_max(env, capsys):
    tmp, srv = env
    db = tmp / "magv.duckdb"
    out = _cli(["verify", "cascade", "--no-alternates", "--max-judge-share", "0.25"], capsys)
    n = out["trajectories"]
    assert out["decided_by"].get("verifier", 0) == 0  # the constructed model is unsure of every row
    assert 1 <= out["judged"] <= math.floor(0.25 * n) and out["queued_for_human"] == n - out["judged"]
    with Store(db, read_only=True) as store:
        steps = [d["step"] for d in store.cascade_decisions()]
        assert steps.count("judge") == out["judged"] and all(d["calls"] == 1 for d in store.cascade_decisions()
                                                              if d["step"] == "judge")  # fmt: skip
    assert srv.counts["chat"] == out["judged"]

    # a rerun with a larger share judges more, but the share counts the earlier verdicts too
    out = _cli(["verify", "cascade", "--no-alternates", "--max-judge-share", "0.5", "--max-llm-tokens", "700"],
               capsys)  # fmt: skip
    with Store(db, read_only=True) as store:
        judged = sum(d["step"] == "judge" for d in store.cascade_decisions())
    assert judged <= math.floor(0.5 * n)
    assert out["tokens_spent"] <= 700 and any("token budget" in s for s in out["budget_stops"])


@pytest.mark.integration
def test_agreement_rules_decide_when_labelled_rows_back_them(env, capsys):
    tmp, _ = env
    db = tmp / "magv.duckdb"
    from magv.cascade.live import population
    from magv.cascade.rules import RULES

    with Store(db) as store:
        unanimous = [r.run_id for r in population(store) if RULES[0].applies(r.features)]
        store.add_labels([Label(run_id=r, source="human", correct=True) for r in unanimous])
    assert len(unanimous) >= 10
    out = _cli(["verify", "cascade", "--no-alternates", "--no-judge", "--rule-confidence", "0.85"], capsys)
    assert out["decided_by"]["agreement"] == len(unanimous)
    with Store(db, read_only=True) as store:
        rows = [d for d in store.cascade_decisions() if d["step"] == "agreement"]
    assert all(d["correct"] is True and d["detail"] == "rule unanimous" and d["calls"] == 0 for d in rows)
    agreement = out["curve"]["points"][0]
    assert agreement["accuracy"] == 1.0 and agreement["tokens"] == 0


def test_rule_confidence_leaves_out_the_rows_own_label():
    rows = {f"r{i}": {"n_runs": 3, "mct_share": 1.0, "is_mct": 1, "status_ok": 1, "has_response": 1,
                      "n_tool_errors": 0, "n_invalid": 0} for i in range(4)}  # fmt: skip
    labels = {"r0": True, "r1": True, "r2": True}
    got = rule_decisions(rows, labels, min_confidence=0.7)
    assert got["r3"].confidence == pytest.approx(4 / 5)  # 3 of 3 agree, smoothed
    assert got["r0"].confidence == pytest.approx(3 / 4)  # its own label left out: 2 of 2
    assert rule_decisions(rows, {}, 0.6) == {}  # no labelled evidence: 0.5, decides nothing


def test_cost_curve_is_cumulative_per_1000():
    decisions = [
        {"run_id": "a", "step": "verifier", "correct": True, "costs": {}},
        {"run_id": "b", "step": "judge", "correct": False,
         "costs": {"alternates": {"prompt_tokens": 100, "completion_tokens": 20, "calls": 3},
                   "judge": {"prompt_tokens": 40, "completion_tokens": 10, "calls": 1}}},
        {"run_id": "c", "step": "human", "correct": None, "costs": {}},
        {"run_id": "d", "step": "human", "correct": None, "costs": {}},
    ]  # fmt: skip
    c = cost_curve(
        decisions, {"a": True, "b": True, "c": False}, {"d": True}, judge_tokens_per_verdict=50, human={"c"}
    )
    by = {p["step"]: p for p in c["points"]}
    assert by["verifier"]["accuracy"] == 1.0 and by["verifier"]["tokens_per_1000"] == 0
    assert by["alternates"]["tokens_per_1000"] == 120 / 4 * 1000 and by["alternates"]["calls_per_1000"] == 750
    assert by["judge"]["tokens"] == 170 and by["judge"]["accuracy"] == 0.5
    assert by["human"]["decided"] == 3 and by["human"]["accuracy"] == pytest.approx(2 / 3, abs=1e-4)
    assert c["judge_everything_tokens_per_1000"] == 50000 and c["share_of_judge_everything"] == 0.85
    assert (
        by["alternates"]["share_of_judge_everything"] == 0.6
        and by["human"]["share_of_judge_everything"] == 0.85
    )
    unknown = cost_curve(decisions, {"a": True}, judge_tokens_per_verdict=None)
    assert all(p["share_of_judge_everything"] is None for p in unknown["points"])


def test_uncertain_order_puts_the_least_certain_first_and_spreads_groups():
    keys = ["a1", "a2", "a3", "b1", "b2", "c1", "n"]
    p = [0.5, 0.52, 0.9, 0.45, 0.1, 0.8, None]
    groups = ["a", "a", "a", "b", "b", "c", "d"]
    # round 1: each group's most uncertain, groups by that; then the second of each; unscored last
    assert uncertain_order(keys, p, groups, 0.5) == ["a1", "b1", "c1", "a2", "b2", "a3", "n"]


def test_annotate_uncertain_takes_the_cascade_queue_first(tmp_store, monkeypatch, capsys):
    from tests.verify_helpers import synthetic_store

    synthetic_store(tmp_store, n_questions=6)
    mct = [m["run_id"] for m in tmp_store.mct()]
    probabilities = [0.9, 0.55, 0.1, 0.48, 0.7, 0.3]
    tmp_store.bulk_add_predictions("m", 0.5, mct, probabilities, [p >= 0.5 for p in probabilities], [],
                                   np.zeros((6, 0)), np.zeros((6, 0)))  # fmt: skip
    tmp_store.add_cascade_decisions([{"run_id": mct[0], "step": "human", "correct": None}])
    order = [item.run.id for item in uncertain_annotations(tmp_store)]
    groups = {r.id: q.group_id for q in tmp_store.questions() for r in tmp_store.runs([q.id])}
    assert order[0] == mct[0]  # queued by the cascade
    rest = order[1:]
    assert rest[0] == mct[3]  # p = 0.48: the least certain
    assert groups[rest[0]] != groups[rest[1]]  # the next comes from another question group
    assert [item.run.id for item in uncertain_annotations(tmp_store, limit=2)] == order[:2]

    db = tmp_store.path
    tmp_store.close()
    monkeypatch.setenv("MAGV_DATABASE", str(db))
    monkeypatch.setattr("sys.stdin", __import__("io").StringIO("c\nq\n"))
    assert main(["verify", "annotate", "--uncertain"]) == 0
    with Store(db, read_only=True) as store:
        human = [lb for lb in store.labels() if lb.source == "human"]
    assert [lb.run_id for lb in human] == [mct[0]] and human[0].correct is True


def test_learning_curve_uncertainty_first_on_separable_rows():
    rng = np.random.default_rng(1)
    X = rng.normal(size=(80, 3))
    y = (X[:, 0] > 0).astype(int)
    curve = learning_curve(X, y, [i // 2 for i in range(80)], sizes=[4, 8, 16, 32])
    points = curve["points"]
    assert [p["labels"] for p in points] == [4, 8, 16, 32] and points[-1]["test_rows"] == 48
    assert points[-1]["uncertain"] >= 0.9 and points[-1]["random"] >= 0.8
    assert "uncertainty" in curve["method"]


def test_a_version_2_file_gains_the_cascade_table(tmp_path):
    import duckdb

    from magv.store.schema import MIGRATIONS, SCHEMA_VERSION

    path = tmp_path / "old.duckdb"
    con = duckdb.connect(str(path))
    for m in MIGRATIONS[:2]:
        con.execute(m.sql)
    con.execute("INSERT INTO meta VALUES ('schema_version', '2')")
    con.close()
    with Store(path) as store:
        assert store.cascade_decisions() == []
        assert store.scalar("SELECT value FROM meta WHERE key='schema_version'") == str(SCHEMA_VERSION)


@pytest.mark.integration
def test_the_cascade_flow_records_its_run(env):
    from magv.config import load_settings
    from magv.flows.cascade import cascade_flow

    tmp, _ = env
    cfg = load_settings(None)
    result = cascade_flow(settings=cfg.model_dump(mode="json"), max_judge_share=0.25, alternates=False)
    assert result["status"] == "completed" and list(result["stages"]) == ["judge", "cascade"]
    summary = result["cascade"]
    assert summary["judged"] == math.floor(0.25 * summary["trajectories"])
    with Store(tmp / "magv.duckdb", read_only=True) as store:
        assert store.pipeline_runs()[-1]["status"] == "completed"
        assert len(store.cascade_decisions()) == summary["trajectories"]


def test_a_store_without_features_has_nothing_to_decide(tmp_path, monkeypatch, capsys):
    from tests.verify_helpers import synthetic_store

    db = tmp_path / "magv.duckdb"
    with Store(db) as store:
        synthetic_store(store, n_questions=4)
    monkeypatch.setenv("MAGV_DATABASE", str(db))
    out = _cli(["verify", "cascade", "--no-judge", "--no-alternates"], capsys)
    assert out["trajectories"] == 0 and out["queued_for_human"] == 0
    assert main(["verify", "cascade", "--max-judge-share", "1.5"]) == 2  # bad input


def test_simulated_cascade_replays_stored_alternates_and_verdicts(tmp_path, monkeypatch, capsys):
    from magv.cascade.loop import CascadeOptions
    from magv.cascade.replay import simulate
    from magv.models import JudgeVerdict
    from magv.verify.features import compute_features
    from magv.verify.labels import gold_labels
    from tests.verify_helpers import HashEmbedder, synthetic_store

    db = tmp_path / "magv.duckdb"
    with Store(db) as store:
        truth = synthetic_store(store, n_questions=40)
        compute_features(store, HashEmbedder(), mct_only=True)
        gold_labels(store)
        mct = {m["question_id"]: m["run_id"] for m in store.mct()}
        # a judge right on 3 of 4, 100 tokens a verdict
        store.add_judge_verdicts([
            JudgeVerdict(run_id=mct[q], model="j", correct=ok if i % 4 else not ok, prompt_tokens=90,
                         completion_tokens=10)
            for i, (q, ok) in enumerate(sorted(truth.items()))
        ])  # fmt: skip
        before = store.counts()
        out = simulate(store, CascadeOptions(max_judge_share=0.25, margin=0.3))
        assert store.counts() == before  # nothing written
    n = out["rows"]
    assert n == 40 and out["judged"] <= 10
    points = {p["step"]: p for p in out["curve"]["points"]}
    assert points["human"]["coverage"] == 1.0
    assert points["judge"]["tokens"] == 100 * out["judged"]
    assert out["curve"]["judge_everything_tokens_per_1000"] == 100_000
    assert out["single"]["judge"] == 0.75 and out["single"]["judge_rows"] == 40
    assert out["costs"]["judge_verdict"]["tokens_per_verdict"] == 100.0
    # the synthetic store logged no reverse call: its cost is unknown, counted 0, and said so
    reverse = out["costs"]["reverse_call"]
    assert reverse["known"] is False and "unknown" in reverse["source"]
    assert out["costs"]["alternates"]["run"]  # cheaper than a 100-token verdict here
    reverse_cost = {"prompt_tokens": 300, "completion_tokens": 50, "source": "provenance"}
    with Store(db) as store:
        tight = simulate(store, CascadeOptions(max_judge_share=1.0, margin=0.49, max_llm_tokens=250))
        # with a 350-token reverse call the alternates cost more than a verdict: the step is skipped
        dear = simulate(store, CascadeOptions(max_judge_share=0.25, margin=0.3), reverse_cost=reverse_cost)
        store.con.execute("UPDATE judge_verdicts SET prompt_tokens = 4990")  # now 5,000 tokens a verdict
        given = simulate(store, CascadeOptions(max_judge_share=0.25, margin=0.3), reverse_cost=reverse_cost)
        store.con.execute("UPDATE judge_verdicts SET prompt_tokens = 90")
    assert dear["costs"]["alternates"]["run"] is False and given["costs"]["alternates"]["run"]
    skipped = {p["step"]: p for p in dear["curve"]["points"]}
    assert skipped["alternates"]["tokens"] == skipped["verifier"]["tokens"]
    assert skipped["alternates"]["decided_here"] == 0 and skipped["judge"]["decided_here"] > 0
    assert tight["tokens_spent"] <= 250 and tight["judged"] <= 2
    assert given["costs"]["reverse_call"] == {"prompt_tokens": 300, "completion_tokens": 50, "known": True,
                                              "source": "provenance"}  # fmt: skip
    # each alternates replay now carries one 350-token reverse call; the rest is unchanged
    extra = {p["step"]: p["tokens"] for p in given["curve"]["points"]}
    alternates_before = points["alternates"]["tokens"] - points["verifier"]["tokens"]
    alternates_now = extra["alternates"] - extra["verifier"]
    replays = points["alternates"]["calls"] - points["verifier"]["calls"]
    assert replays > 0 and alternates_now - alternates_before > 0
    assert (alternates_now - alternates_before) % 350 == 0
    assert given["single"] == out["single"]

    with Store(db) as store:  # verdicts imported without tokens: the judge's cost is unknown, not 0
        store.con.execute("UPDATE judge_verdicts SET prompt_tokens = 0, completion_tokens = 0")
        free = simulate(store, CascadeOptions(max_judge_share=0.25, margin=0.3))
    assert free["curve"]["judge_everything_tokens_per_1000"] is None
    assert free["curve"]["share_of_judge_everything"] is None
    assert free["costs"]["judge_verdict"]["tokens_per_verdict"] is None
    assert free["costs"]["judge_verdict"]["source"].startswith("unknown")

    monkeypatch.setenv("MAGV_DATABASE", str(db))
    cli = _cli(["verify", "cascade", "--simulate", "--max-judge-share", "0.25", "--margin", "0.3"], capsys)
    assert cli["rows"] == 40 and cli["curve"]["points"][-1]["coverage"] == 1.0
    # the replay takes the live cascade's options: --no-judge and --no-alternates are honoured
    off = _cli(
        ["verify", "cascade", "--simulate", "--margin", "0.3", "--no-judge", "--no-alternates"], capsys
    )
    steps = {p["step"]: p["decided_here"] for p in off["curve"]["points"]}
    assert off["judged"] == 0 and off["tokens_spent"] == 0
    assert steps["judge"] == 0 and steps["alternates"] == 0 and off["costs"]["alternates"]["run"] is False


@pytest.mark.integration
def test_the_verifier_decides_what_is_far_from_the_threshold(env, capsys):
    tmp, srv = env
    chats = srv.counts["chat"]
    # the constructed model says p of about 0.34 to every row without alternates
    near = _cli(
        ["verify", "cascade", "--no-alternates", "--no-judge", "--threshold", "0.4", "--margin", "0.1"],
        capsys,
    )
    assert near["decided_by"] == {} and near["queued_for_human"] == near["trajectories"]
    far = _cli(["verify", "cascade", "--no-alternates", "--no-judge", "--margin", "0.1"], capsys)
    assert far["decided_by"] == {"verifier": far["trajectories"]} and far["queued_for_human"] == 0
    with Store(tmp / "magv.duckdb", read_only=True) as store:
        rows = store.cascade_decisions()
    assert all(d["step"] == "verifier" and d["correct"] is False and d["calls"] == 0 for d in rows)
    assert all(d["detail"].startswith("model constructed-alternates, p=0.3") for d in rows)
    assert srv.counts["chat"] == chats  # the free steps call no model


@pytest.mark.integration
def test_alternates_are_skipped_when_a_verdict_costs_less(env, capsys):
    """The log says a verdict costs 10 tokens, far less than a question's alternates (whole agent
    runs): the cascade goes from the verifier straight to the judge and runs no alternates."""
    from magv.models import LLMCall

    tmp, srv = env
    db = tmp / "magv.duckdb"
    with Store(db) as store:
        store.add_llm_calls([LLMCall(id="cheap-judge", key="cheap-judge", role="judge", model="m", endpoint="e",
                                     request={}, prompt_tokens=8, completion_tokens=2)])  # fmt: skip
    before = _tokens(db, ("reverse", "responder"))
    out = _cli(["verify", "cascade", "--max-judge-share", "1.0"], capsys)
    assert _tokens(db, ("reverse", "responder")) == before
    assert out["decided_by"].get("alternates", 0) == 0 and out["decided_by"].get("judge", 0) >= 1
    assert any(s.startswith("alternates: skipped") for s in out["budget_stops"]), out["budget_stops"]


@pytest.mark.integration
@pytest.mark.parametrize(
    "args, options",
    [
        (["--no-judge"], {"judge": False}),
        (["--no-alternates", "--max-judge-share", "0.25"], {"alternates": False, "max_judge_share": 0.25}),
    ],
    ids=["alternates", "judge"],
)
def test_live_and_replay_make_the_same_decisions(env, capsys, args, options):
    """One loop over two oracles: the live cascade on the fake server, then a replay of what it
    stored (the verifier's scores before and after the alternates, the alternates' runs, the
    judge's verdicts) with the same options decide every trajectory alike."""
    from magv.cascade.live import population
    from magv.cascade.loop import CascadeOptions, decide
    from magv.cascade.replay import ReplayOracle, alternate_costs, stored_verdicts

    tmp, _ = env
    db = tmp / "magv.duckdb"
    with Store(db, read_only=True) as store:
        model_id = store.scored_model_id()
        before = {p.run_id: p.probability for p in store.predictions(model_id)}
        threshold = store.predictions(model_id)[0].threshold
    live = _cli(["verify", "cascade", *args], capsys)
    with Store(db, read_only=True) as store:
        stored = {d["run_id"]: (d["step"], d["correct"]) for d in store.cascade_decisions()}
        after = {p.run_id: p.probability for p in store.predictions(model_id)}
        rows = population(store)
        labels = {k: v.correct for k, v in store.effective_labels().items()}
        costs = alternate_costs(store, [r.question_id for r in rows])
        _, verdicts = stored_verdicts(store)
    oracle = ReplayOracle(rows, labels, before, after, threshold, model_id, costs, verdicts)
    replay = decide(oracle, CascadeOptions(**options))
    assert {d.row.run_id: (d.step, d.correct) for d in replay.decisions} == stored
    assert replay.decided_by == live["decided_by"] and sum(live["decided_by"].values()) > 0
    assert replay.budget.judged == live["judged"] and len(replay.pending) == live["queued_for_human"]


def test_the_budget_counts_only_what_was_spent():
    from magv.cascade.loop import Budget

    b = Budget(max_tokens=100, max_judged=2)
    assert b.affordable([30, 30, 30, 30]) == 3  # in order, while they fit
    assert b.affordable([120, 10]) == 0  # the first does not fit: nothing after it is taken
    assert b.affordable([0, 0]) == 1  # no estimate yet: one, to be measured
    b.spend(95)
    assert b.affordable([10]) == 0 and b.affordable([0]) == 1 and b.tokens == 95
    b.spend(5)
    assert b.affordable([0]) == 0
    with pytest.raises(ValueError):
        b.spend(-5)  # nothing is reserved, so nothing is given back
    assert Budget(None, 0).affordable([10**9] * 3) == 3
