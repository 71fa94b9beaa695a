"""How magv talks to models: one OpenAI-compatible async client (`LLMClient`), the two ways of
getting a tool call (`choose_action`), the servers magv can start (`LlamaServer`, `VLLMServer`,
`managed_endpoints`) and sentence embeddings (`Embedder`). Every call is logged through a
`CallRecorder` (the Store).

The names are imported from their modules on first use, so a command that never calls a model
(`verify score`, `report`) does not import the openai SDK with the package's lighter modules.
"""

from __future__ import annotations

import importlib
from typing import Any

_HOME = {
    "Action": "actions",
    "FinalAnswer": "actions",
    "InvalidReply": "actions",
    "action_schema": "actions",
    "choose_action": "actions",
    "parse_json_action": "actions",
    "parse_native_action": "actions",
    "CallRecorder": "client",
    "ChatResult": "client",
    "LLMClient": "client",
    "Embedder": "embeddings",
    "LlamaServer": "servers",
    "VLLMServer": "servers",
    "default_gguf": "servers",
    "managed_endpoints": "servers",
}
__all__ = sorted(_HOME)


def __getattr__(name: str) -> Any:
    if name not in _HOME:
        raise AttributeError(f"module 'magv.llm' has no attribute {name!r}")
    value = getattr(importlib.import_module(f"magv.llm.{_HOME[name]}"), name)
    globals()[name] = value
    return value
