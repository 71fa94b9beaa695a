"""Agent prompts: one Jinja file per agent in `prompts/`, identified by a hash of its content.

The hash goes into the call log with every LLM call, so a dataset says which prompt made it.
`MAGV_PROMPTS_DIR` points at another folder of prompts (same file names) to try a prompt change.
"""

from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any

import jinja2

from magv.errors import BadInput

_REPO_PROMPTS = Path(__file__).resolve().parent.parent / "prompts"
_env = jinja2.Environment(
    undefined=jinja2.StrictUndefined, keep_trailing_newline=False, trim_blocks=False, autoescape=False
)


def prompts_dir() -> Path:
    return Path(os.environ.get("MAGV_PROMPTS_DIR") or _REPO_PROMPTS)


@dataclass(frozen=True)
class Prompt:
    name: str
    source: str
    hash: str

    def render(self, **values: Any) -> str:
        try:
            return _compiled(self.source).render(**values).strip()
        except jinja2.UndefinedError as exc:
            raise BadInput(f"{prompts_dir() / (self.name + '.j2')}: {exc}") from None


@lru_cache(maxsize=64)
def _compiled(source: str) -> jinja2.Template:
    # Compiling takes ~20 ms and a pipeline renders the same few prompts thousands of times.
    return _env.from_string(source)


@lru_cache(maxsize=32)
def _load(path: str) -> Prompt:
    p = Path(path)
    try:
        source = p.read_text()
    except OSError as exc:
        raise BadInput(f"{p}: cannot read prompt: {exc.strerror}") from None
    try:
        _env.parse(source)
    except jinja2.TemplateSyntaxError as exc:
        raise BadInput(f"{p}:{exc.lineno}: template syntax error: {exc.message}") from None
    return Prompt(name=p.stem, source=source, hash=hashlib.sha256(source.encode()).hexdigest()[:16])


def load_prompt(name: str) -> Prompt:
    return _load(str(prompts_dir() / f"{name}.j2"))
