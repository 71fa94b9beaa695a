"""Agent prompts: one Jinja file per agent, identified by a hash of its content.

The templates live in the repository's `prompts/` folder and install as the package data of
`magv.agent_prompts`, so they are read with importlib.resources wherever magv is installed.
The hash goes into the call log with every LLM call, so a dataset says which prompt made it.
`MAGV_PROMPTS_DIR` points at another folder of prompts (same file names) to try a prompt change.
"""

from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass
from functools import lru_cache
from importlib import resources
from importlib.resources.abc import Traversable
from pathlib import Path
from typing import Any

import jinja2

from magv.errors import BadInput

PROMPTS_PACKAGE = "magv.agent_prompts"
_env = jinja2.Environment(
    undefined=jinja2.StrictUndefined, keep_trailing_newline=False, trim_blocks=False, autoescape=False
)


def prompts_dir() -> Traversable:
    """The folder prompts are read from: MAGV_PROMPTS_DIR, else the installed templates."""
    override = os.environ.get("MAGV_PROMPTS_DIR")
    return Path(override) if override else resources.files(PROMPTS_PACKAGE)


@dataclass(frozen=True)
class Prompt:
    name: str
    source: str
    hash: str
    where: str = ""  # the file it was read from, for error messages

    def render(self, **values: Any) -> str:
        try:
            return _compiled(self.source).render(**values).strip()
        except jinja2.UndefinedError as exc:
            raise BadInput(f"{self.where or self.name}: {exc}") from None


@lru_cache(maxsize=64)
def _compiled(source: str) -> jinja2.Template:
    # Compiling takes ~20 ms and a pipeline renders the same few prompts thousands of times.
    return _env.from_string(source)


@lru_cache(maxsize=32)
def _load(folder: str, name: str) -> Prompt:
    file = prompts_dir().joinpath(f"{name}.j2")
    where = str(file)
    try:
        source = file.read_text(encoding="utf-8")
    except OSError as exc:
        raise BadInput(f"{where}: cannot read prompt: {exc.strerror or exc}") from None
    try:
        _env.parse(source)
    except jinja2.TemplateSyntaxError as exc:
        raise BadInput(f"{where}:{exc.lineno}: template syntax error: {exc.message}") from None
    return Prompt(
        name=name, source=source, hash=hashlib.sha256(source.encode()).hexdigest()[:16], where=where
    )


def load_prompt(name: str) -> Prompt:
    # Keyed by folder: `magv eval` switches MAGV_PROMPTS_DIR between configurations.
    return _load(str(prompts_dir()), name)
