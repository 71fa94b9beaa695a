"""The model registry: assembly of a GGUF from part packages into the model cache (small fake parts
stand in for the real ones), the pinned hash, cache reuse, `[llama] model`, `magv models`."""

from __future__ import annotations

import hashlib
import json
import sys
import textwrap
from dataclasses import replace

import pytest
from typer.testing import CliRunner

from magv.cli import app
from magv.config import Settings, load_settings
from magv.errors import BadInput, RunFailed
from magv.gguf import registry
from magv.gguf.registry import MODELS, ModelSpec, assemble, cache_dir, get_model
from magv.llm.servers import EmbeddedModel, embedded_model

PARTS = [b"GGUF\x03head-", b"middle-" * 1000, b"tail"]


@pytest.fixture
def fake_model(tmp_path, monkeypatch) -> ModelSpec:
    """Three part packages `fakepart_<n>` on sys.path, and a spec pinned to their concatenation."""
    pkgs = tmp_path / "site"
    for i, data in enumerate(PARTS, 1):
        mod = pkgs / f"fakepart_{tmp_path.name}_{i}"
        (mod / "data").mkdir(parents=True)
        (mod / "data" / "part.bin").write_bytes(data)
        (mod / "__init__.py").write_text(
            textwrap.dedent("""
            import os
            def get_part_path():
                return os.path.join(os.path.dirname(__file__), "data", "part.bin")
        """)
        )
    monkeypatch.syspath_prepend(str(pkgs))
    monkeypatch.setenv("MAGV_MODEL_CACHE", str(tmp_path / "cache"))
    return ModelSpec(
        name="fake-model", summary="test", parts=tuple(f"fakepart_{tmp_path.name}_{i}" for i in (1, 2, 3)),
        part_fn="get_part_path", packages="fakepart-1..3", version="1.0", licence="MIT", upstream="here",
        sha256=hashlib.sha256(b"".join(PARTS)).hexdigest(), size_bytes=sum(map(len, PARTS)),
        chat_format=None, instruct=True,
    )  # fmt: skip


def _leftovers(spec: ModelSpec) -> list[str]:
    return sorted(p.name for p in cache_dir().iterdir() if not p.name.endswith(".lock"))


def test_assembles_the_parts_in_order_into_the_cache(fake_model):
    path = assemble(fake_model)
    assert path.parent == cache_dir() and path.name == fake_model.filename
    assert path.read_bytes() == b"".join(PARTS)
    assert _leftovers(fake_model) == [fake_model.filename]  # no temporary file left behind


def test_an_assembled_model_is_reused_without_reading_the_parts(fake_model):
    first = assemble(fake_model)
    mtime = first.stat().st_mtime_ns
    for module in fake_model.parts:  # the parts are gone: a second assembly would fail
        sys.modules.pop(module, None)
    broken = replace(fake_model, parts=("no_such_part_module",))
    assert assemble(broken) == first and first.stat().st_mtime_ns == mtime


def test_hash_mismatch_names_the_packages_and_both_hashes_and_leaves_nothing(fake_model):
    wrong = replace(fake_model, sha256="0" * 64)
    with pytest.raises(RunFailed) as err:
        assemble(wrong)
    message = str(err.value)
    assert "fakepart-1..3" in message and "0" * 64 in message and fake_model.sha256 in message
    assert _leftovers(wrong) == []  # nothing half-written at the final name or beside it
    assert not (cache_dir() / wrong.filename).exists()


def test_a_stale_partial_file_is_never_used(fake_model):
    cache_dir().mkdir(parents=True)
    (cache_dir() / f".{fake_model.name}-dead.partial").write_bytes(b"GGUF half")
    path = assemble(fake_model)
    assert path.read_bytes() == b"".join(PARTS)


def test_a_missing_part_package_says_what_to_install(fake_model):
    missing = replace(fake_model, parts=(*fake_model.parts, "fakepart_not_installed"))
    with pytest.raises(RunFailed, match=r"package fakepart-not-installed is not installed.*magv\[embedded\]"):
        assemble(missing)
    assert _leftovers(missing) == []


def test_registry_names_and_settings(monkeypatch, tmp_path):
    assert {"qwen2.5-coder-1.5b-instruct", "gemma-3-270m"} <= set(MODELS)
    assert registry.DEFAULT_MODEL == "qwen2.5-coder-1.5b-instruct" == Settings().llama.model
    assert get_model("qwen2.5-coder-1.5b-instruct").chat_format is None  # the GGUF's template
    assert get_model("gemma-3-270m").chat_format == "magv-gemma"
    with pytest.raises(BadInput, match="llama.model: unknown model 'nope'"):
        get_model("nope")
    monkeypatch.setenv("MAGV_LLAMA__MODEL", "nope")
    with pytest.raises(BadInput, match="MAGV_LLAMA__MODEL: llama.model: .*unknown model"):
        load_settings()
    monkeypatch.setenv("MAGV_LLAMA__MODEL", "gemma-3-270m")
    assert load_settings().llm.model == "gemma-3-270m"


def test_gguf_wins_over_the_named_model(tmp_path):
    gguf = tmp_path / "my-model.gguf"
    gguf.write_bytes(b"GGUF")
    s = Settings(llama={"model": "gemma-3-270m", "gguf": str(gguf)})
    assert embedded_model(s.llama) == EmbeddedModel(gguf, None)


def test_models_list_command(fake_model, monkeypatch):
    monkeypatch.setitem(MODELS, fake_model.name, fake_model)
    runner = CliRunner()
    before = json.loads(runner.invoke(app, ["models", "list", "--json"]).stdout)
    row = {m["name"]: m for m in before["models"]}[fake_model.name]
    assert row["installed"] and row["assembled"] is None and row["licence"] == "MIT"
    assert {m["name"]: m for m in before["models"]}["qwen2.5-coder-1.5b-instruct"]["selected"]
    out = runner.invoke(app, ["models", "assemble", fake_model.name])
    assert out.exit_code == 0 and out.stdout.strip() == str(cache_dir() / fake_model.filename)
    after = json.loads(runner.invoke(app, ["models", "list", "--json"]).stdout)
    assert {m["name"]: m for m in after["models"]}[fake_model.name]["assembled"] == out.stdout.strip()
    bad = runner.invoke(app, ["models", "assemble", "nope"])
    assert isinstance(bad.exception, BadInput) and bad.exception.exit_code == 2
