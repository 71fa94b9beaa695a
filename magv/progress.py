"""Progress reporting without a UI dependency in the library.

The CLI installs a reporter (rich progress bars); library code and flows only call `stage()` and
`note()` (a line such as what a stage is about to cost).
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Protocol


class Reporter(Protocol):
    def start(self, name: str, total: int) -> None: ...
    def advance(self, name: str, n: int = 1) -> None: ...
    def finish(self, name: str) -> None: ...
    def note(self, text: str) -> None: ...


class _Null:
    def start(self, name: str, total: int) -> None:
        pass

    def advance(self, name: str, n: int = 1) -> None:
        pass

    def finish(self, name: str) -> None:
        pass

    def note(self, text: str) -> None:
        pass


_reporter: Reporter = _Null()


def set_reporter(reporter: Reporter | None) -> None:
    global _reporter
    _reporter = reporter or _Null()


class _Stage:
    def __init__(self, name: str):
        self.name = name

    def advance(self, n: int = 1) -> None:
        _reporter.advance(self.name, n)


@contextmanager
def stage(name: str, total: int) -> Iterator[_Stage]:
    _reporter.start(name, total)
    try:
        yield _Stage(name)
    finally:
        _reporter.finish(name)


def note(text: str) -> None:
    _reporter.note(text)
