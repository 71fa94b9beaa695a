"""Agent prompts: one Jinja file per agent, identified by a hash of its content.

The templates live in the repository's `prompts/` folder and install as the package data of
`magv.agent_prompts`, so they are read with importlib.resources wherever magv is installed.
The hash goes into the call log with every LLM call, so a dataset says which prompt made it.
`MAGV_PROMPTS_DIR` points at another folder of prompts (same file names) to try a prompt change.

A prompt folder is data, not code: templates are rendered in Jinja's immutable sandbox, where a
template reads the values magv passes and calls their plain methods, but cannot reach Python's
internals (`cycler.__init__.__globals__.os`) nor change a value; such an attempt is a BadInput
naming the template.
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
from jinja2 import nodes
from jinja2.sandbox import ImmutableSandboxedEnvironment

from magv.errors import BadInput

PROMPTS_PACKAGE = "magv.agent_prompts"
PROMPTS_ENV = "MAGV_PROMPTS_DIR"
AGENTS = ("investigator", "responder", "reverse", "judge")  # the prompts a pipeline run renders
_env = ImmutableSandboxedEnvironment(
    undefined=jinja2.StrictUndefined, keep_trailing_newline=False, trim_blocks=False, autoescape=False
)


def prompts_dir() -> Traversable:
    """The folder prompts are read from: MAGV_PROMPTS_DIR, else the installed templates."""
    override = os.environ.get(PROMPTS_ENV)
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
        except jinja2.exceptions.SecurityError as exc:
            raise BadInput(
                f"{self.where or self.name}: refused by the template sandbox: {exc} (a prompt may use the "
                "values magv passes, not Python's internals)"
            ) from None


@lru_cache(maxsize=64)
def _compiled(source: str) -> jinja2.Template:
    # Compiling takes ~20 ms and a pipeline renders the same few prompts thousands of times.
    return _env.from_string(source)


@lru_cache(maxsize=32)
def _load(folder: str, name: str, file: Traversable | None = None) -> Prompt:
    file = file or prompts_dir().joinpath(f"{name}.j2")
    where = str(file)
    try:
        source = file.read_text(encoding="utf-8")
    except OSError as exc:
        raise BadInput(f"{where}: cannot read prompt: {exc.strerror or exc}") from None
    try:
        tree = _env.parse(source)
    except jinja2.TemplateSyntaxError as exc:
        raise BadInput(f"{where}:{exc.lineno}: template syntax error: {exc.message}") from None
    _refuse_internals(tree, where)
    return Prompt(
        name=name, source=source, hash=hashlib.sha256(source.encode()).hexdigest()[:16], where=where
    )


def _refuse_internals(tree: nodes.Template, where: str) -> None:
    """At load, before any question is asked: a template naming an underscore attribute
    (`cycler.__init__`) wants Python's internals, which the sandbox would refuse at render anyway."""
    for node in tree.find_all((nodes.Getattr, nodes.Getitem)):
        key = node.attr if isinstance(node, nodes.Getattr) else getattr(node.arg, "value", None)
        if isinstance(key, str) and key.startswith("_"):
            raise BadInput(
                f"{where}:{node.lineno}: the template reaches {key!r}, a Python internal; a prompt may "
                "only use the values magv passes"
            )


def load_prompt(name: str) -> Prompt:
    # Keyed by folder: `magv eval` switches MAGV_PROMPTS_DIR between configurations.
    return _load(str(prompts_dir()), name)


def check_prompt_folder(folder: str | Path | None, names: tuple[str, ...], where: str) -> None:
    """Up front, before any question is asked: `folder` (None: the installed prompts) holds a
    readable, parsable `NAME.j2` for each of `names`; else one BadInput naming `where` and the file."""
    if folder is None:
        return
    path, files = Path(folder), ", ".join(f"{n}.j2" for n in names)
    if not path.is_dir():
        what = "is not a folder" if path.exists() else "no such folder"
        raise BadInput(f"{where}={folder}: {what}; expected a folder of prompt templates ({files})")
    for name in names:
        file = path / f"{name}.j2"
        if not file.is_file():
            raise BadInput(f"{where}={folder}: {file.name} is missing; this command renders {files}")
        _load(str(path), name, file)
