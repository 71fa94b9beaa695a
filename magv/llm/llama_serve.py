"""The embedded llama.cpp server process: `python -m magv.llm.llama_serve [--watch-parent PID] ARGS`,
where ARGS are llama-cpp-python server arguments. Three things on top of `python -m llama_cpp.server`:

- chat format `magv-gemma`: Gemma's turn markup. The gemma-3-270m GGUF carries no chat template
  (llama-cpp-python then falls back to llama-2 markup) and the built-in `gemma` format drops system
  and tool messages, which hold the tool specs and tool results.
- a prompt cache whose saved states carry one row of logits instead of one per prompt token. With
  Gemma's 262k vocabulary a row is 1 MiB: copying them took 0.05-0.6 s per call (more than the
  whole llama.cpp state, ~3 MB) and they are not counted against the cache size. A restored state
  re-decodes its last token before sampling, so the dropped rows are never read.
- the GGUF's own chat template (Qwen's) gets tool-call arguments as objects, as Hugging Face
  templates expect; OpenAI clients send them as JSON strings, which the template would print quoted.
- each reply's usage carries `prompt_tokens_details.cached_tokens`, the prompt tokens taken from the
  KV cache or the prompt cache instead of being evaluated (llama-cpp-python does not report them).
- with --watch-parent, the server exits when the process that started it is gone, so a killed
  pipeline does not leave a model in memory.
"""

from __future__ import annotations

import json
import os
import sys
import threading
import time
from typing import Any

from magv.gguf.registry import GEMMA_FORMAT


def _text(message: dict[str, Any]) -> str:
    content = message.get("content")
    if isinstance(content, list):
        content = "".join(p.get("text", "") for p in content if isinstance(p, dict))
    text = content or ""
    if message.get("role") == "assistant" and message.get("tool_calls"):
        calls = [
            {"tool": c["function"]["name"], "arguments": c["function"].get("arguments")}
            for c in message["tool_calls"]
        ]
        text = (text + "\n" if text else "") + json.dumps(calls, ensure_ascii=False)
    if message.get("role") == "tool":
        text = f"Tool result: {text}"
    return text


def gemma_prompt(messages: list[dict[str, Any]]) -> str:
    """Gemma turns; system text goes in front of the first user turn (Gemma has no system role)."""
    system = "\n\n".join(_text(m) for m in messages if m.get("role") == "system")
    turns = []
    for m in messages:
        if m.get("role") == "system":
            continue
        who = "model" if m.get("role") == "assistant" else "user"
        text = _text(m)
        if system and who == "user":
            text, system = f"{system}\n\n{text}", ""
        turns.append(f"<start_of_turn>{who}\n{text}<end_of_turn>\n")
    if system:  # only a system message: it is the request
        turns.insert(0, f"<start_of_turn>user\n{system}<end_of_turn>\n")
    return "".join(turns) + "<start_of_turn>model\n"


def register_gemma_format() -> None:
    from llama_cpp import llama_chat_format as fmt

    if GEMMA_FORMAT in fmt.LlamaChatCompletionHandlerRegistry()._chat_handlers:
        return

    @fmt.register_chat_format(GEMMA_FORMAT)
    def _format(messages: list[dict[str, Any]], **_: Any) -> Any:
        return fmt.ChatFormatterResponse(prompt=gemma_prompt(messages), stop=["<end_of_turn>"])


def use_slim_prompt_cache() -> None:
    import ctypes

    import numpy as np
    from llama_cpp import llama as llama_module
    from llama_cpp import llama_cpp as capi

    cls = llama_module.Llama
    if getattr(cls.save_state, "_magv_slim", False):
        return

    def save_state(self: Any) -> Any:
        ctx = self._ctx.ctx
        size = capi.llama_state_get_size(ctx)
        buf = (ctypes.c_uint8 * size)()
        used = int(capi.llama_state_get_data(ctx, buf, size))
        if used > size:
            raise RuntimeError("llama.cpp state grew while it was being saved")
        return llama_module.LlamaState(
            input_ids=self.input_ids.copy(),
            scores=np.zeros((1, self._n_vocab), dtype=np.single),
            n_tokens=self.n_tokens,
            llama_state=bytes(memoryview(buf)[:used]),
            llama_state_size=used,
            seed=self._seed,
        )

    save_state._magv_slim = True  # type: ignore[attr-defined]
    cls.save_state = save_state


def _decoded_arguments(messages: list[dict[str, Any]]) -> list[dict[str, Any]]:
    out = []
    for m in messages:
        calls = m.get("tool_calls") if isinstance(m, dict) else None
        if calls:
            m = dict(m, tool_calls=[_decode_call(c) for c in calls])
        out.append(m)
    return out


def _decode_call(call: dict[str, Any]) -> dict[str, Any]:
    fn = call.get("function") or {}
    args = fn.get("arguments")
    if isinstance(args, str):
        try:
            return dict(call, function=dict(fn, arguments=json.loads(args)))
        except ValueError:
            pass
    return call


def use_object_arguments_in_templates() -> None:
    from llama_cpp import llama_chat_format as fmt

    cls = fmt.Jinja2ChatFormatter
    if getattr(cls.__call__, "_magv", False):
        return
    original = cls.__call__

    def call(self: Any, *, messages: list[dict[str, Any]], **kwargs: Any) -> Any:
        return original(self, messages=_decoded_arguments(messages), **kwargs)

    call._magv = True  # type: ignore[attr-defined]
    cls.__call__ = call


def report_cached_tokens() -> None:
    """Count, at each generate(), the prompt prefix already in the KV cache (after a prompt-cache
    state was loaded), the way llama-cpp-python decides what it re-evaluates."""
    from llama_cpp import llama as llama_module
    from llama_cpp import llama_types

    cls = llama_module.Llama
    if getattr(cls.generate, "_magv", False):
        return
    original_generate, original_chat = cls.generate, cls.create_chat_completion

    def generate(self: Any, tokens: Any, *args: Any, **kwargs: Any) -> Any:
        tokens = list(tokens)
        reused = 0
        if kwargs.get("reset", True) and self.n_tokens > 0:
            reused = cls.longest_token_prefix(self._input_ids[: self.n_tokens].tolist(), tokens)
            if reused == len(tokens):  # all cached: the last token is decoded again for fresh logits
                reused -= 1
        self._magv_cached_tokens = reused
        return original_generate(self, tokens, *args, **kwargs)

    def create_chat_completion(self: Any, *args: Any, **kwargs: Any) -> Any:
        self._magv_cached_tokens = 0
        reply = original_chat(self, *args, **kwargs)
        if isinstance(reply, dict) and isinstance(reply.get("usage"), dict):
            reply["usage"]["prompt_tokens_details"] = {"cached_tokens": self._magv_cached_tokens}
        return reply

    generate._magv = True  # type: ignore[attr-defined]
    cls.generate = generate
    cls.create_chat_completion = create_chat_completion
    # The server filters replies through its response types; let the usage keep the extra key.
    # Must run before llama_cpp.server.app is imported (its routes build the schemas).
    llama_types.CompletionUsage.__pydantic_config__ = {"extra": "allow"}  # type: ignore[attr-defined]


def add_health_route() -> None:
    """`GET /health` without the model lock. llama-cpp-python's routes, `/v1/models` too, wait for
    the lock every completion holds, so a busy server looks dead to a health check; the model is
    loaded before the app serves, so answering at all means it is ready."""
    from llama_cpp.server import app as server_app

    original = server_app.create_app
    if getattr(original, "_magv", False):
        return

    def create_app(*args: Any, **kwargs: Any) -> Any:
        app = original(*args, **kwargs)
        app.add_api_route("/health", lambda: {"status": "ok"}, methods=["GET"], include_in_schema=False)
        return app

    create_app._magv = True  # type: ignore[attr-defined]
    server_app.create_app = create_app


def _watch_parent(pid: int) -> None:
    while os.getppid() == pid:
        time.sleep(1.0)
    os._exit(0)


def main(argv: list[str] | None = None) -> None:
    args = list(sys.argv[1:] if argv is None else argv)
    if args[:1] == ["--watch-parent"]:
        parent = int(args[1])
        args = args[2:]
        threading.Thread(target=_watch_parent, args=(parent,), daemon=True).start()
    register_gemma_format()
    use_slim_prompt_cache()
    use_object_arguments_in_templates()
    report_cached_tokens()
    add_health_route()  # before __main__ imports create_app by name
    from llama_cpp.server.__main__ import main as serve

    sys.argv = ["llama_cpp.server", *args]
    serve()


if __name__ == "__main__":
    main()
