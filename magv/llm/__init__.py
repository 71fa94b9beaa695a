"""How magv talks to models: one OpenAI-compatible async client (`LLMClient`), the two ways of
getting a tool call (`choose_action`), the servers magv can start (`LlamaServer`, `VLLMServer`,
`managed_endpoints`) and sentence embeddings (`Embedder`). Every call is logged through a
`CallRecorder` (the Store)."""

from magv.llm.actions import (
    Action,
    FinalAnswer,
    InvalidReply,
    action_schema,
    choose_action,
    parse_json_action,
    parse_native_action,
)
from magv.llm.client import CallRecorder, ChatResult, LLMClient
from magv.llm.embeddings import Embedder
from magv.llm.servers import LlamaServer, VLLMServer, default_gguf, managed_endpoints

__all__ = [
    "Action",
    "CallRecorder",
    "ChatResult",
    "Embedder",
    "FinalAnswer",
    "InvalidReply",
    "LLMClient",
    "LlamaServer",
    "VLLMServer",
    "action_schema",
    "choose_action",
    "default_gguf",
    "managed_endpoints",
    "parse_json_action",
    "parse_native_action",
]
