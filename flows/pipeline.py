"""The whole MAG-V pipeline: generate, select, respond, reverse, respond to alternates, then the
verifier stages (features, gold labels, train, score)."""

from __future__ import annotations

from typing import Any

from prefect import flow

from magv.pipeline.runner import run_generation, verify_stages
from magv.pipeline.session import session


@flow(name="magv-pipeline", log_prints=True)
def pipeline_flow(settings: dict[str, Any] | None = None, verify: bool = True) -> dict[str, Any]:
    with session(settings, "pipeline") as sess:
        run_generation(sess)
        if verify:
            verify_stages(sess)
        return sess.result()


if __name__ == "__main__":  # Dask's LocalCluster starts processes that re-import the entry point
    pipeline_flow()
