"""Prefect flows that compose magv's stages. Thin: the work is in the `magv` library."""
