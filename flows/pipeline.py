"""The whole MAG-V pipeline: generate, select, respond, reverse, respond to alternates, then the
verifier stages (features, gold labels, train, score)."""

from __future__ import annotations

from typing import Any

from prefect import flow

from magv.flows.common import run_select, run_stage, session

GENERATION_STAGES = ("generate", "select", "respond", "reverse", "respond_alternates")


@flow(name="magv-pipeline", log_prints=True)
def pipeline_flow(settings: dict[str, Any] | None = None, verify: bool = True) -> dict[str, Any]:
    with session(settings, "pipeline") as sess:
        for stage in GENERATION_STAGES:
            if stage == "select":
                run_select(sess)
            else:
                run_stage(sess, stage)
        if verify:
            from magv.flows.verify import verify_stages

            verify_stages(sess)
        return {"run_id": sess.run_id, "stages": sess.stages, "summary": sess.summary()}


if __name__ == "__main__":  # Dask's LocalCluster starts processes that re-import the entry point
    pipeline_flow()
