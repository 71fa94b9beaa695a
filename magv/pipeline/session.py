"""A pipeline run: the settings, the store, the worker context and the reports of its stages,
recorded in `pipeline_runs` whatever the outcome."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from magv.config import Settings, settings_from_dict
from magv.models import make_id, utcnow
from magv.pipeline.base import StageReport
from magv.pipeline.worker import WorkerContext, close_resources, use_local_recorder
from magv.store import Store

COMPLETED, WITH_ERRORS = "completed", "completed_with_errors"


@dataclass
class Session:
    settings: Settings
    store: Store
    ctx: WorkerContext
    run_id: str
    stages: dict[str, Any] = field(default_factory=dict)
    started_at: datetime = field(default_factory=utcnow)

    def record(self, report: StageReport) -> StageReport:
        self.stages[report.name] = report.as_dict()
        return report

    def failed_stages(self) -> dict[str, str]:
        """The stages that could not do (some of) their work, with the reason."""
        return {name: s["error"] for name, s in self.stages.items() if s.get("error")}

    def status(self) -> str:
        return WITH_ERRORS if self.failed_stages() else COMPLETED

    def summary(self) -> dict[str, Any]:
        """Totals of the stages so far, with the LLM calls this run logged (retries, errors)."""
        out = summarize(self.stages)
        try:
            out["llm_calls"] = self.store.llm_call_totals(self.started_at)
        except Exception:  # a summary must never hide the error that ended the run
            pass
        if {"generate", "reverse"} & set(self.stages):
            try:
                out["quality"] = run_quality(self.store, self.settings, self.ctx.domain().name)
            except Exception:  # as above
                pass
        return out

    def result(self, **extra: Any) -> dict[str, Any]:
        """What a flow returns: the run, its status, its stages and their totals."""
        return {
            "run_id": self.run_id,
            "status": self.status(),
            "stages": self.stages,
            "summary": self.summary(),
            **extra,
        }


@contextmanager
def session(
    settings: dict[str, Any] | Settings | None, kind: str, endpoints: bool = True
) -> Iterator[Session]:
    """Open the store, start the embedded model if no endpoint is set (unless `endpoints` is
    False: the verifier stages need none), and record the pipeline run with its stage timings.
    A run whose stages all did their work is `completed`; one where a stage failed is
    `completed_with_errors`."""
    from magv.llm import managed_endpoints

    if isinstance(settings, Settings):
        cfg = settings
    else:
        cfg = settings_from_dict(settings) if settings else Settings()
    store = Store(cfg.database)
    store.mark_abandoned_runs()
    run_id = make_id(kind, cfg.domain, str(utcnow()))
    store.start_pipeline_run(run_id, cfg.domain, {"kind": kind, **cfg.model_dump(mode="json")})
    status = "failed"
    error = None
    sess = None
    try:
        if endpoints:
            with managed_endpoints(cfg) as urls:
                sess = Session(cfg, store, WorkerContext(cfg, urls), run_id)
                use_local_recorder(store)
                yield sess
        else:
            sess = Session(cfg, store, WorkerContext(cfg, {}), run_id)
            yield sess
        status = sess.status()
    except KeyboardInterrupt:
        status = "interrupted"
        raise
    except Exception as exc:
        error = f"{type(exc).__name__}: {exc}"
        raise
    finally:
        use_local_recorder(None)
        close_resources()
        summary = sess.summary() if sess else summarize({})
        if error:
            summary["error"] = error
        store.finish_pipeline_run(run_id, status, sess.stages if sess else {}, summary)
        store.close()


@contextmanager
def local_session(
    settings: Settings, store: Store, endpoints: dict[str, list[str]], run_id: str
) -> Iterator[Session]:
    """A session for work that is not a pipeline run (`magv eval`, `magv verify judge`): its calls
    are logged and replayed through the store, and nothing is added to `pipeline_runs` (the report
    describes the latest pipeline run)."""
    use_local_recorder(store)
    try:
        yield Session(settings, store, WorkerContext(settings, endpoints), run_id)
    finally:
        use_local_recorder(None)


def run_quality(store: Store, settings: Settings, domain: str) -> dict[str, Any]:
    """The dataset-quality figures of the run's domain (magv/report/quality.py), without examples."""
    from magv.report.quality import dataset_quality, headline

    v = settings.verify
    q = dataset_quality(store, domain, v.gold_match, v.gold_arguments, v.gold_overrides, examples=0)
    return {"headline": headline(q), **q}


def summarize(stages: dict[str, Any]) -> dict[str, Any]:
    def total(key: str) -> int:
        return sum(s.get(key, 0) for s in stages.values())

    return {
        "prompt_tokens": total("prompt_tokens"),
        "completion_tokens": total("completion_tokens"),
        "failures": {name: s.get("failed", 0) for name, s in stages.items() if s.get("failed")},
        "faults": {key: total(key) for key in ("failed", "llm_errors", "invalid_steps", "tool_errors")},
        "seconds": round(sum(s.get("seconds", 0.0) for s in stages.values()), 3),
    }
