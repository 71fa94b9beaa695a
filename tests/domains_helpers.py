"""Shared by the tests/test_domains*.py modules: built-in domain databases built once per session."""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest

from magv.domains import load_domain

FIXTURES = Path(__file__).resolve().parent / "fixtures"
USER_DOMAIN = FIXTURES / "user_domain"


@pytest.fixture(scope="session")
def domain_data_dir(tmp_path_factory) -> Path:
    """retail and logs built once with seed 0 (the seed the shipped seed questions refer to)."""
    data_dir = tmp_path_factory.mktemp("domains")
    for name in ("retail", "logs"):
        load_domain(name).build(data_dir)
    return data_dir


def file_sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()
