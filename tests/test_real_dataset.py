"""The committed real-model dataset (bench/make_real_dataset.py) imports into a store and holds what
its provenance file says: both label classes, R >= 2 runs per base question, alternates, judge
verdicts. A missing fixture fails: the benchmarks read it."""

from __future__ import annotations

import json
from pathlib import Path

from magv.cli import main
from magv.store import Store

FIXTURES = Path(__file__).resolve().parent.parent / "data" / "fixtures"
BASE = FIXTURES / "real_dataset.jsonl"
PROVENANCE = FIXTURES / "real_dataset.json"


def _import(path: Path, db: Path, domain: str, capsys) -> dict:
    assert path.is_file(), f"{path} is missing: run bench/make_real_dataset.py"
    assert (
        main(["--database", str(db), "import", "trajectories", str(path), "--domain", domain, "--json"]) == 0
    )
    return json.loads(capsys.readouterr().out)


def test_real_dataset_imports_with_what_its_provenance_counts(tmp_path, capsys):
    assert PROVENANCE.is_file(), f"{PROVENANCE} is missing: run bench/make_real_dataset.py"
    prov = json.loads(PROVENANCE.read_text(encoding="utf-8"))
    counts = prov["counts"]
    assert prov["model"]["gguf_sha256"] and prov["commands"]

    db = tmp_path / "real.duckdb"
    imported = _import(BASE, db, "real", capsys)
    assert imported["runs"] == imported["lines"] == counts["base_runs"] + counts["alternate_runs"]
    assert imported["alternates"] == counts["alternate_questions"] > 0
    assert imported["questions"] == counts["base_questions"] + counts["alternate_questions"]
    assert imported["labels"] == counts["labelled"]

    with Store(db, read_only=True) as store:
        everything = store.questions(domain="real")
        questions = {q.id: q for q in everything if q.origin != "alternate"}
        alternates = [q for q in everything if q.origin == "alternate"]
        runs = store.runs(question_ids=list(questions))
        labels = store.effective_labels()
        per_question: dict[str, int] = {}
        for run in runs:
            per_question[run.question_id] = per_question.get(run.question_id, 0) + 1
        assert min(per_question.values()) >= 2 and len(per_question) == counts["base_questions"]

        base_labels = [labels[r.id].correct for r in runs if r.id in labels]
        assert len(base_labels) == counts["labelled"]
        assert sum(base_labels) == counts["correct"] > 0
        assert len(base_labels) - sum(base_labels) == counts["incorrect"] > 0

        # the judge's verdicts travel in each line's meta (kept by the importer on the question)
        metas = [entry["meta"] for q in questions.values() for entry in q.meta["import"]["runs"].values()]
        judged = [m for m in metas if m.get("judge_correct") is not None]
        assert len(judged) == counts["judged"] > 0
        assert all(m["mct"] and m["judge_model"] == prov["model"]["name"] for m in judged)
        # and the importer restores them as verdicts, so the judge baseline and the cascade read them
        verdicts = store.judge_verdicts()
        assert len(verdicts) == counts["judged"] and {v.model for v in verdicts} == {prov["model"]["name"]}
        assert {m["domain"] for m in metas} == set(counts["per_domain"]) == {"retail", "logs"}

        # every alternate is linked to a base question of the dataset, in the base's CV group
        assert len(alternates) == counts["alternate_questions"]
        assert all(q.parent_id in questions for q in alternates)
        assert all(q.group_id == questions[q.parent_id].group_id for q in alternates)


def _make_real_dataset():
    import importlib.util

    path = Path(__file__).resolve().parent.parent / "bench" / "make_real_dataset.py"
    spec = importlib.util.spec_from_file_location("make_real_dataset", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_provenance_records_the_mean_reverse_call_of_each_store(tmp_path):
    from magv.models import LLMCall

    def call(i: int, role: str, prompt: int, completion: int) -> LLMCall:
        return LLMCall(id=f"c{i}", key=f"k{i}", role=role, model="m", endpoint="e", request={},
                       prompt_tokens=prompt, completion_tokens=completion)  # fmt: skip

    with Store(tmp_path / "retail.duckdb") as store:
        store.add_llm_calls(
            [call(1, "reverse", 100, 10), call(2, "reverse", 200, 30), call(3, "judge", 900, 90)]
        )
    with Store(tmp_path / "logs.duckdb") as store:
        store.add_llm_calls([call(4, "reverse", 400, 50), call(5, "responder", 5, 5)])
    with Store(tmp_path / "empty.duckdb"):
        pass
    dbs = {d: tmp_path / f"{d}.duckdb" for d in ("retail", "logs", "empty", "missing")}
    got = _make_real_dataset().reverse_calls(dbs)
    assert got["per_domain"] == {
        "retail": {"prompt_tokens": 150.0, "completion_tokens": 20.0, "calls": 2},
        "logs": {"prompt_tokens": 400.0, "completion_tokens": 50.0, "calls": 1},
        "empty": None,
    }
    # over all stores, weighted by their calls: (100 + 200 + 400) / 3, (10 + 30 + 50) / 3
    assert (got["prompt_tokens"], got["completion_tokens"], got["calls"]) == (233.3, 30.0, 3)
    none = _make_real_dataset().reverse_calls({"empty": tmp_path / "empty.duckdb"})
    assert (none["prompt_tokens"], none["calls"]) == (None, 0)


def test_lone_conversations_get_scores_that_spread_and_rank(tmp_path):
    """A conversation scored alone (no siblings: production traffic) has signal of its own: the
    verifier trained on the real-model set's runs with their siblings gives its 160 runs, each
    scored alone, many different probabilities, and ranks them well out of fold."""
    import numpy as np
    from sklearn.metrics import roc_auc_score
    from sklearn.model_selection import GroupKFold

    from magv.config import load_settings
    from magv.interchange import read_import_file
    from magv.verify.features import FEATURE_NAMES, FEATURE_VERSION, TrajectoryFeaturizer, needs_embeddings
    from magv.verify.models import Verifier, save_model
    from magv.verify.scoring import load_scorer
    from magv.verify.toolspec import LogTools, domain_tools

    writes = domain_tools("retail").writes | domain_tools("logs").writes
    runs = [x for x in read_import_file(BASE) if x.label is not None and x.meta.get("origin") != "alternate"]
    names = [n for n in FEATURE_NAMES if not needs_embeddings([n])]
    columns = [FEATURE_NAMES.index(n) for n in names]
    featurizer = TrajectoryFeaturizer(None, writes)
    trajectories, groups = [x.trajectory for x in runs], np.array([x.key for x in runs])
    X = featurizer.transform(trajectories, groups)[:, columns]
    alone = featurizer.transform(trajectories, list(range(len(runs))))[:, columns]
    y = np.array([int(x.label) for x in runs])

    oof = np.zeros(len(y))
    for train, test in GroupKFold(5).split(X, y, groups):
        oof[test] = Verifier("logreg").fit(X[train], y[train]).proba_correct(alone[test])
    assert roc_auc_score(y, oof) > 0.7

    model = save_model(
        tmp_path / "m.skops", Verifier("logreg").fit(X, y), names, FEATURE_VERSION, model_id="m"
    )
    scorer = load_scorer(load_settings(), model_file=model, tools=LogTools(writes=writes))
    assert scorer.featurizer.embedder is None  # the model reads no embedding: none is loaded
    scores = [scorer.score([t], [0])[0].probability for t in trajectories]
    counts = np.unique(scores, return_counts=True)[1]
    assert len(counts) >= 80 and counts.max() <= 0.1 * len(scores), (len(counts), counts.max())


def test_the_text_model_alone_scores_without_computing_features(tmp_path, monkeypatch):
    """A saved text-only verifier reads the documents only: scoring a file with it computes no
    feature (no sibling comparison, no embedding), and gives the same probabilities as the model."""
    import numpy as np

    from magv.config import load_settings
    from magv.interchange import read_import_file
    from magv.verify.document import documents
    from magv.verify.features import FEATURE_VERSION, TrajectoryFeaturizer
    from magv.verify.models import TEXT_LABEL, candidate_features, make_verifier, model_input, save_model
    from magv.verify.scoring import load_scorer

    runs = [x for x in read_import_file(BASE) if x.label is not None and x.meta.get("origin") != "alternate"]
    ts, y = [x.trajectory for x in runs], np.array([int(x.label) for x in runs])
    assert candidate_features(TEXT_LABEL, ["n_calls", "sibling_ss_mean"]) == []
    v = make_verifier(TEXT_LABEL)
    v.fit(model_input(v, np.zeros((len(ts), 0)), documents(ts)), y)
    path = save_model(tmp_path / "t.skops", v, [], FEATURE_VERSION, model_id="t", name=TEXT_LABEL)
    scorer = load_scorer(load_settings(), model_file=path)

    def refuse(*args, **kwargs):
        raise AssertionError("the text model alone computed features")

    monkeypatch.setattr(TrajectoryFeaturizer, "transform", refuse)
    got = [verdict.probability for verdict in scorer.score(ts[:20], [x.key for x in runs[:20]])]
    want = v.proba_correct(model_input(v, np.zeros((20, 0)), documents(ts[:20]))).round(6)
    assert np.allclose(got, want) and len(set(got)) > 5
