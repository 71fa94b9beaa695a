"""Prefect flows of magv (installed as `magv.flows`). Thin: each opens a session and runs stages
of `magv.pipeline`; the work is there."""
