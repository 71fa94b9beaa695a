"""The work one caller lets the featurizer do: seconds of graph edit distance, and a flag that stops
it. The service gives each request one, so that no request keeps a scoring worker for long and a
request whose client has gone stops; with none (training, `magv verify features`, file scoring)
the featurizer works as long as it takes.

    budget = WorkBudget(ged_seconds=1.0)
    with budget.active():
        X = featurizer.transform(trajectories, groups)
    budget.exact_rows  # per transform call: 1.0 where every GED of the row was exact

The budget travels in a context variable rather than through every call between the service and
the pair function: the scorer and the featurizer keep their small interfaces.
"""

from __future__ import annotations

import math
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass, field

import numpy as np

from magv.errors import MagvError


class WorkCancelled(MagvError):
    """The caller stopped the work (the service's client left before its answer)."""


@dataclass
class WorkBudget:
    """ged_seconds: time all exact and searched graph edit distances of the work may take, in
    total; once spent, each further pair gets the linear-time upper bound (its row says bounded).
    cancelled: set from another thread to stop the work at the next pair."""

    ged_seconds: float = math.inf
    cancelled: threading.Event = field(default_factory=threading.Event)
    ged_spent: float = 0.0
    bounded_pairs: int = 0
    exact_rows: list[np.ndarray] = field(default_factory=list)

    def left(self) -> float:
        return self.ged_seconds - self.ged_spent

    @contextmanager
    def timed(self) -> Iterator[None]:
        """Time spent inside counts against ged_seconds."""
        started = time.perf_counter()
        try:
            yield
        finally:
            self.ged_spent += time.perf_counter() - started

    def check(self) -> None:
        if self.cancelled.is_set():
            raise WorkCancelled("the work was cancelled (the client left)")

    @contextmanager
    def active(self) -> Iterator[WorkBudget]:
        token = _CURRENT.set(self)
        try:
            yield self
        finally:
            _CURRENT.reset(token)


_CURRENT: ContextVar[WorkBudget | None] = ContextVar("magv_work_budget", default=None)


def current() -> WorkBudget | None:
    """The budget of the work in progress in this thread or task, if its caller set one."""
    return _CURRENT.get()
