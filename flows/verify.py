"""The verifier half as a Prefect flow: features -> gold labels -> train -> score.

Each task calls one library stage in `magv.verify`; the pipeline flow runs the same tasks after the
generation stages (`verify_stages`). A stage that cannot run (no labels of both classes, say) is
recorded as failed with its reason and the rest go on: a pipeline keeps what it made.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from prefect import flow, task
from prefect.cache_policies import NO_CACHE

from flows.common import Session, summarize
from magv import progress
from magv.config import Settings, load_settings, settings_from_dict
from magv.errors import MagvError, RunFailed
from magv.llm.embeddings import lazy_embedder
from magv.models import make_id, utcnow
from magv.runtime import WorkerContext
from magv.stages import StageReport
from magv.store import Store
from magv.verify import labels as label_stage
from magv.verify import training
from magv.verify.features import compute_features


@task(name="verify-features", cache_policy=NO_CACHE)
def features_task(store: Store, settings: Settings, alternates: bool = True) -> dict[str, Any]:
    with progress.stage("features", 1) as bar:
        n = compute_features(store, lazy_embedder(settings), alternates=alternates)
        bar.advance()
    return {"written": n}


@task(name="verify-gold-labels", cache_policy=NO_CACHE)
def gold_labels_task(store: Store, settings: Settings) -> dict[str, Any]:
    v = settings.verify
    return {"written": label_stage.gold_labels(store, v.gold_match, v.gold_arguments, v.gold_overrides)}


@task(name="verify-train", cache_policy=NO_CACHE)
def train_task(store: Store, settings: Settings) -> dict[str, Any]:
    try:
        result = training.train(store, settings)
    except MagvError as exc:
        # Expected on small or one-sided data: a recorded outcome, not a crash with a traceback.
        return {"error": str(exc)}
    except Exception as exc:  # a model library failing on odd data must not end the pipeline
        return {"error": f"training failed: {type(exc).__name__}: {exc}"}
    return {"written": 1, "model_id": result.model_id, **result.summary()}


@task(name="verify-score", cache_policy=NO_CACHE)
def score_task(store: Store, settings: Settings) -> dict[str, Any]:
    result = training.score(store, settings)
    return {"written": result.n, "model_id": result.model_id, "correct": result.n_correct}


def verify_stages(sess: Session, alternates: bool = True) -> dict[str, Any]:
    """Run the four stages in the session, recording a StageReport for each."""
    steps: list[tuple[str, Callable[..., dict[str, Any]], dict[str, Any]]] = [
        ("features", features_task, {"alternates": alternates}),
        ("gold_labels", gold_labels_task, {}),
        ("train", train_task, {}),
        ("score", score_task, {}),
    ]
    out: dict[str, Any] = {}
    for name, fn, kwargs in steps:
        started = time.perf_counter()
        report = StageReport(name, planned=1)
        try:
            out[name] = fn(sess.store, sess.settings, **kwargs)
            if "error" in out[name]:
                raise RunFailed(out[name]["error"])
            report.done, report.written = 1, int(out[name].get("written", 0))
        except MagvError as exc:
            report.failed = 1
            report.errors.append(str(exc))
            out[name] = {"error": str(exc)}
            if name == "train" and sess.store.latest_verifier_model() is None:
                report.seconds = time.perf_counter() - started
                sess.record(report)
                break  # nothing to score with
        report.seconds = time.perf_counter() - started
        sess.record(report)
    return out


@flow(name="magv-verify", log_prints=True)
def verify_flow(
    settings: dict[str, Any] | None = None, settings_path: str | None = None, alternates: bool = True
) -> dict[str, Any]:
    """The verifier stages on the configured database; no model server is started (none is needed)."""
    cfg = (
        settings_from_dict(settings)
        if settings
        else load_settings(Path(settings_path) if settings_path else None)
    )
    store = Store(cfg.database)
    run_id = make_id("verify", cfg.domain, str(utcnow()))
    store.start_pipeline_run(run_id, cfg.domain, {"kind": "verify", **cfg.model_dump(mode="json")})
    sess = Session(cfg, store, WorkerContext(cfg, {}), run_id)
    status = "failed"
    try:
        results = verify_stages(sess, alternates=alternates)
        status = "completed"
        return {"run_id": run_id, "stages": sess.stages, "results": results}
    finally:
        store.finish_pipeline_run(run_id, status, sess.stages, summarize(sess.stages))
        store.close()
