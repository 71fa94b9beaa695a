"""The verifier flow under Prefect: features -> gold labels -> train -> score."""

from __future__ import annotations

import pytest

from magv.config import load_settings
from magv.models import Label
from magv.store import Store
from tests.verify_helpers import synthetic_store


def _cfg(tmp_path, n: int):
    db = tmp_path / "data" / "magv.duckdb"
    with Store(db) as store:
        synthetic_store(store, n_questions=n)
    return load_settings(None, database=db, verify={"models_dir": str(tmp_path / "models")})


@pytest.mark.integration
def test_verify_flow_runs_every_stage_and_records_them(tmp_path, prefect_harness):
    from magv.flows.verify import verify_flow

    cfg = _cfg(tmp_path, 30)
    result = verify_flow(settings=cfg.model_dump(mode="json"), alternates=False)
    assert list(result["stages"]) == ["features", "gold_labels", "train", "score"]
    assert all(s["done"] == 1 and s["failed"] == 0 for s in result["stages"].values())
    assert result["results"]["train"]["best"] in {m["name"] for m in result["results"]["train"]["models"]}
    with Store(cfg.database, read_only=True) as store:
        counts = store.counts()
        # a row, a gold label and a verdict for each of the 30 questions' 3 runs
        assert counts["features"] == counts["predictions"] == counts["labels"] == 90
        assert store.pipeline_runs()[-1]["status"] == "completed"


@pytest.mark.integration
def test_a_stage_that_cannot_run_is_recorded_and_the_flow_finishes(tmp_path, prefect_harness):
    from magv.flows.verify import verify_flow

    cfg = _cfg(tmp_path, 6)
    with Store(cfg.database) as store:
        store.add_labels([Label(run_id=r.id, source="human", correct=False) for r in store.runs()])
    result = verify_flow(settings=cfg.model_dump(mode="json"), alternates=False)
    train = result["stages"]["train"]
    assert train["failed"] == 1 and "all 18 labelled trajectories are incorrect" in train["errors"][0]
    assert "score" not in result["stages"]  # no model to score with
    assert result["stages"]["features"]["written"] == 18
