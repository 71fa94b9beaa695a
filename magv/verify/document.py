"""A trajectory as one text document, what the verifier's text model reads.

    document(trajectory)  # "call_get_user_details arg_get_user_details_user_id_mia_li_3668 ..."

The document is a sequence of tokens, in call order: one per tool call (`call_<name>`), one per
argument leaf (`arg_<name>_<path>_<value>`, nested keys joined by `_`; a long string value adds
`arg_<name>_<path>` and its text), `error_<name>` when the tool failed
(magv.definitions.is_tool_error), `invalid_reply` for an agent reply that was not a call, and
`status_<status>` when the run did not end normally. Every token is one word under
scikit-learn's default token pattern (`\\w\\w+`), so word bigrams keep call order.

A run that called no tool and ended normally has an empty document. Marking it with a token of its
own was tried: with siblings it moved the airline logs' `agreement + text` from 0.865 to 0.872 and
the nested selection from 0.841 to 0.851, but the real-model set's nested selection from 0.853 to
0.820 and a lone conversation's `logreg + text` from 0.89-0.97 to 0.73-0.79 (three task-disjoint
splits), so it is not used.

The agent's words (its response, its replies) and the tools' results are left out: on the
airline logs (task-disjoint CV, 5 seeds; errors and the last agent message read as issue 26's
import does) adding the response and error messages took the text model's AUROC from 0.810 to 0.738, and a second text model over the words alone
(0.727) stacked beside it added nothing (0.860 against 0.863); results are data dumps that differ
per task.

`with_documents` joins a numeric feature matrix and the documents into the matrix a text-reading
`Verifier` takes: the feature columns, then the document as the last column (dtype object).
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from typing import Any

import numpy as np

from magv.definitions import is_tool_error
from magv.models import Trajectory

_NON_WORD = re.compile(r"\W+")
MAX_VALUE_CHARS = 40  # an argument value longer than this (free text) is kept as words instead


def _word(text: Any) -> str:
    return _NON_WORD.sub("_", str(text)).strip("_").lower()


def _argument_tokens(value: Any, path: str) -> Iterable[str]:
    if isinstance(value, dict):
        for k in sorted(value):
            yield from _argument_tokens(value[k], f"{path}_{_word(k)}")
    elif isinstance(value, list):
        for item in value:
            yield from _argument_tokens(item, path)
    elif isinstance(value, str) and len(value) > MAX_VALUE_CHARS:
        yield f"arg_{path}"
        yield value
    else:
        yield f"arg_{path}_{_word(value)}"


def document(trajectory: Trajectory, errors: bool = True) -> str:
    """The text of a trajectory for the text model (see the module docstring); without `errors`,
    the call and argument tokens only (what the TF-IDF baseline reads)."""
    parts: list[str] = []
    for step in trajectory.steps:
        if step.kind == "invalid":
            if errors:
                parts.append("invalid_reply")
            continue
        if step.call is None:
            continue
        name = _word(step.call.name)
        parts.append(f"call_{name}")
        parts.extend(_argument_tokens(step.call.arguments, name))
        if errors and is_tool_error(step):
            parts.append(f"error_{name}")
    if errors and trajectory.status != "ok":
        parts.append(f"status_{trajectory.status}")
    return "\n".join(parts)


def documents(trajectories: Sequence[Trajectory], errors: bool = True) -> list[str]:
    return [document(t, errors) for t in trajectories]


def with_documents(X: Any, docs: Sequence[str]) -> np.ndarray:
    """The feature matrix X (n, d) with the documents as column d: what a Verifier with a text
    model fits and predicts on."""
    X = np.asarray(X, dtype=np.float64)
    if X.ndim != 2 or len(X) != len(docs):
        raise ValueError(f"with_documents: {len(docs)} documents for a matrix of shape {X.shape}")
    out = np.empty((len(X), X.shape[1] + 1), dtype=object)
    out[:, :-1] = X
    out[:, -1] = [str(d) for d in docs]
    return out
