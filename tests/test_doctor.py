"""`magv doctor`: one line per check with ok or the fix, --json, exit 1 on a failure; a damaged model
cache is named with the command that repairs it; the full doctor passes on this machine."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from magv.doctor import LLAMA_KNOWN_BAD, check_llama_cpp
from magv.gguf.registry import DEFAULT_MODEL, cached_path, get_model

MAGV = [sys.executable, "-m", "magv"]


def doctor(*args: str, env: dict | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([*MAGV, "doctor", *args], capture_output=True, text=True, env=env, timeout=600)


def test_quick_doctor_names_a_damaged_model_cache_and_the_fix(tmp_path, monkeypatch):
    import os

    cache = tmp_path / "models"
    cache.mkdir()
    monkeypatch.setenv("MAGV_MODEL_CACHE", str(cache))
    damaged = cached_path(get_model(DEFAULT_MODEL))
    damaged.write_bytes(b"GGUF but cut short")
    env = {**os.environ, "MAGV_MODEL_CACHE": str(cache), "MAGV_DATABASE": str(tmp_path / "magv.duckdb")}
    out = doctor("--quick", "--json", env=env)
    assert out.returncode == 1, out.stderr
    result = json.loads(out.stdout)
    assert result["failed"] == ["model"]
    model = {c["name"]: c for c in result["checks"]}["model"]
    assert "damaged" in model["detail"] and str(damaged) in model["detail"]
    assert model["fix"] == f"rm {damaged} && magv models assemble"
    text = doctor("--quick", env=env)
    assert text.returncode == 1
    assert (
        "FAIL model" in text.stdout
        and "fix: rm" in text.stdout
        and "1 of 7 checks failed: model" in text.stdout
    )


def test_a_known_bad_llama_release_fails_with_the_pinned_one_as_fix(monkeypatch):
    bad = next(iter(LLAMA_KNOWN_BAD))
    monkeypatch.setattr("magv.doctor._version", lambda dist: bad)
    check = check_llama_cpp(None)  # type: ignore[arg-type] - the check reads no settings
    assert not check.ok and "segfaults" in check.detail and "==0.3.16" in check.fix


@pytest.mark.slow
@pytest.mark.integration
def test_full_doctor_passes_here(tmp_path):
    """Real completions through the embedded server (plain, json schema, native tools), embeddings
    offline, a Prefect flow: what CI's fresh-install step runs on a new venv."""
    import os

    env = {
        **os.environ,
        "MAGV_DATABASE": str(tmp_path / "magv.duckdb"),
        "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
    }
    env.pop("PREFECT_API_URL", None)
    out = doctor("--json", env=env)
    result = json.loads(out.stdout)
    assert out.returncode == 0 and result["ok"], json.dumps(result, indent=1) + out.stderr
    names = [c["name"] for c in result["checks"]]
    assert {"llama-cpp-python", "model", "completions", "embeddings", "prefect", "disk"} <= set(names)
