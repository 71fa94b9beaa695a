"""`magv llm calls|stats` (the call log) and `magv serve llama|vllm` (model servers)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import typer
from rich.markup import escape
from rich.table import Table

from magv.commands.common import JsonOption, choice, console, emit_json, open_store, settings
from magv.config import ROLES
from magv.llm.servers import LlamaServer, VLLMServer

llm_app = typer.Typer(
    help="The LLM call log: every model call with tokens, latency and errors.", no_args_is_help=True
)
serve_app = typer.Typer(help="Run a model server in the foreground (Ctrl-C stops it).", no_args_is_help=True)


def _print_table(
    title: str, rows: list[dict[str, Any]], columns: list[tuple[str, str]], droppable: tuple[str, ...] = ()
) -> None:
    """One row per call, fitted to the terminal: columns in `droppable` go, in that order, while the
    table does not fit; identifiers keep their full width and the error column wraps, so nothing a
    user copies is ever cut."""

    def width(key: str, header: str) -> int:
        return max([len(header), *(len(_cell(r, key)) for r in rows)])

    def fixed(cols: list[tuple[str, str]]) -> int:  # all but the error column, with borders
        return sum(width(k, h) for k, h in cols if k != "error") + 3 * len(cols) + 1

    cols = list(columns)
    has_error = any(k == "error" for k, _ in cols)
    for key in droppable:
        if fixed(cols) + (12 if has_error else 0) <= console.width:
            break
        cols = [c for c in cols if c[0] != key]
    t = Table(title=title)
    for key, header in cols:
        left = key in ("id", "time", "role", "model", "template", "error")
        if key == "error":
            t.add_column(header, overflow="fold", min_width=8)
        else:
            t.add_column(
                header, no_wrap=True, min_width=width(key, header), justify="left" if left else "right"
            )
    for r in rows:
        t.add_row(*[_cell(r, k) for k, _ in cols])
    console.print(t)


def _cell(row: dict[str, Any], key: str) -> str:
    value = row.get(key)
    return "-" if value is None else str(value)


def _decoded(row: dict[str, Any]) -> dict[str, Any]:
    out = dict(row)
    for key in ("request", "response"):
        if isinstance(out.get(key), str):
            out[key] = json.loads(out[key])
    return out


def message_text(message: dict[str, Any]) -> str:
    """A chat message as text: its content, and the tool calls it makes."""
    parts = []
    content = message.get("content")
    if isinstance(content, list):  # content parts
        content = "\n".join(str(p.get("text", p)) if isinstance(p, dict) else str(p) for p in content)
    if content:
        parts.append(str(content))
    for call in message.get("tool_calls") or []:
        fn = call.get("function", {})
        parts.append(f"→ {fn.get('name')}({fn.get('arguments', '')})")
    return "\n".join(parts)


def print_call(row: dict[str, Any]) -> None:
    """One call, readable: what it was, every prompt message, and the reply."""
    r = _decoded(row)
    tokens = f"{r['prompt_tokens']}/{r['completion_tokens']} tokens"
    console.print(
        f"[bold]{escape(r['id'])}[/bold]  {r['created_at']:%Y-%m-%d %H:%M:%S}  {escape(str(r['role']))}  "
        f"{escape(str(r['model']))}  {escape(str(r['template'] or '-'))}  {tokens}  {r['latency_s'] or 0:.2f}s"
        + (f"  retries {r['retries']}" if r["retries"] else ""),
        highlight=False,
        soft_wrap=True,
    )
    for m in (r.get("request") or {}).get("messages", []):
        console.print(f"[cyan]{escape(str(m.get('role')))}:[/cyan]", highlight=False)
        console.print(message_text(m), markup=False, highlight=False, soft_wrap=True)
    if r["error"]:
        console.print(f"[red]error:[/red] {escape(r['error'])}", highlight=False, soft_wrap=True)
    for choice_ in (r.get("response") or {}).get("choices", []):
        console.print("[green]response:[/green]", highlight=False)
        console.print(
            message_text(choice_.get("message") or {}), markup=False, highlight=False, soft_wrap=True
        )
    console.print()


@llm_app.command("calls")
def llm_calls(
    ctx: typer.Context,
    role: str = typer.Option(None, "--role", "-r", help=f"Only this agent role ({', '.join(ROLES)})."),
    model: str = typer.Option(None, "--model", "-m", help="Only calls to this model."),
    text: str = typer.Option(
        None, "--query", "-q", help="Only calls whose prompt, response or error contains TEXT."
    ),
    limit: int = typer.Option(20, "--limit", "-n", min=1, help="Newest N calls."),
    short: bool = typer.Option(
        False, "--short", "-s", help="One line per call, without prompt and response."
    ),
    as_json: bool = JsonOption,
) -> None:
    """Logged model calls, newest first, each with its prompt and response (--short: a table)."""
    cfg = settings(ctx)
    with open_store(cfg, read_only=cfg.database.exists()) as store:
        logged = store.logged_roles_models()
        # the agent roles, and any other role a call was logged under
        choice("--role", role, sorted(set(ROLES) | {r["role"] for r in logged if r["role"]}))
        choice("--model", model, sorted({r["model"] for r in logged if r["model"]}))
        rows = store.find_calls(role=role, model=model, text=text, limit=limit)
    if as_json:
        emit_json([_decoded(r) for r in rows])
        return
    if not short:
        for r in rows:
            print_call(r)
        console.print(f"{len(rows)} call{'s' if len(rows) != 1 else ''} (newest first)", highlight=False)
        return
    shown = [
        {
            "id": r["id"],
            "time": f"{r['created_at']:%H:%M:%S}",
            "role": r["role"],
            "model": r["model"],
            "template": r["template"],
            "tokens": f"{r['prompt_tokens']}/{r['completion_tokens']}",
            "latency_s": f"{r['latency_s']:.2f}",
            "retries": r["retries"],
            "error": r["error"],
        }
        for r in rows
    ]
    columns = [
        ("id", "id"),
        ("time", "time"),
        ("role", "role"),
        ("model", "model"),
        ("template", "template"),
        ("tokens", "in/out"),
        ("latency_s", "s"),
        ("retries", "retry"),
        ("error", "error"),
    ]
    _print_table(f"LLM calls ({len(rows)} newest)", shown, columns, droppable=("template", "time", "retries"))


@llm_app.command("stats")
def llm_stats(ctx: typer.Context, as_json: bool = JsonOption) -> None:
    """Calls, tokens, latency, retries and errors per role and model, and the prompt-cache hit rate:
    the share of prompt tokens the server did not evaluate again (from the `cached_tokens` the
    server reports; `-` for servers that do not)."""
    cfg = settings(ctx)
    with open_store(cfg, read_only=cfg.database.exists()) as store:
        rows = store.llm_stats()
    if as_json:
        emit_json(rows)
        return
    columns = [
        ("role", "role"),
        ("model", "model"),
        ("calls", "calls"),
        ("prompt_tokens", "in"),
        ("completion_tokens", "out"),
        ("latency_s", "total s"),
        ("mean_latency_s", "mean s"),
        ("cached_prompt_tokens", "in cached"),
        ("prompt_cache_hit_rate", "hit"),
        ("retries", "retry"),
        ("errors", "errors"),
    ]
    _print_table(
        "LLM calls per role and model (tokens in/out; prompt tokens served from the server's prompt cache)",
        rows,
        columns,
        droppable=("latency_s", "cached_prompt_tokens"),
    )


@serve_app.command("llama")
def serve_llama(
    ctx: typer.Context,
    port: int = typer.Option(None, "--port", help="Port on 127.0.0.1 (default: llama.port)."),
    model: str = typer.Option(
        None, "--model", "-m", help="A model of `magv models list` (default: llama.model)."
    ),
    gguf: Path = typer.Option(None, "--gguf", help="A GGUF model file instead (default: llama.gguf)."),
) -> None:
    """Serve the embedded model with llama.cpp's OpenAI-compatible server."""
    cfg = settings(ctx, **{"llama.model": model})
    server = LlamaServer(cfg, gguf=gguf, port=port)
    console.print(f"starting llama.cpp server on {server.url} (log: {server.log_path})")
    _serve_foreground(server)


@serve_app.command("vllm")
def serve_vllm(
    ctx: typer.Context,
    model: str = typer.Option(None, "--model", "-m", help="Model name or path (default: vllm.model)."),
    port: int = typer.Option(None, "--port", help="Port (default: vllm.port)."),
    host: str = typer.Option("127.0.0.1", "--host", help="Listen address; 0.0.0.0 to serve other hosts."),
    tool_call_parser: str = typer.Option(
        None, "--tool-call-parser", help="vLLM tool parser (hermes, llama3_json, mistral, …)."
    ),
    max_model_len: int = typer.Option(None, "--max-model-len", min=256),
    gpu_memory_utilization: float = typer.Option(None, "--gpu-memory-utilization", min=0.05, max=1.0),
    tensor_parallel_size: int = typer.Option(None, "--tensor-parallel-size", min=1),
    dry_run: bool = typer.Option(False, "--dry-run", help="Print the vllm command and exit."),
    extra: list[str] = typer.Argument(None, help="More `vllm serve` arguments, after `--`."),
) -> None:
    """Serve a model with vLLM, tool calling enabled (needs the gpu extra: pip install 'magv\\[gpu]')."""
    cfg = settings(
        ctx,
        **{
            "vllm.model": model,
            "vllm.port": port,
            "vllm.tool_call_parser": tool_call_parser,
            "vllm.max_model_len": max_model_len,
            "vllm.gpu_memory_utilization": gpu_memory_utilization,
            "vllm.tensor_parallel_size": tensor_parallel_size,
        },
    )
    server = VLLMServer(cfg, host=host, extra_args=list(extra or []))
    if dry_run:
        console.print(" ".join(server.command()), markup=False, highlight=False, soft_wrap=True)
        return
    console.print(
        f"starting vLLM on {server.url} (log: {server.log_path}); first start downloads and compiles"
    )
    _serve_foreground(server)


def _serve_foreground(server: Any) -> None:
    server.start()
    model = getattr(server, "model", None) or server.settings.llm.model
    if server.reused:
        console.print(f"a server already answers on {server.url}; nothing started")
        return
    console.print(
        f"ready at {server.url}. Point magv at it with\n"
        f"  MAGV_LLM__ENDPOINTS='[\"{server.url}\"]' MAGV_LLM__MODEL='{model}'\n"
        "Ctrl-C stops it.",
        markup=False,
        highlight=False,
    )
    try:
        assert server.proc is not None
        code = server.proc.wait()
        console.print(f"server exited with code {code}")
    except KeyboardInterrupt:
        console.print("stopping…")
    finally:
        server.stop()


def register(app: typer.Typer) -> None:
    app.add_typer(serve_app, name="serve")
    app.add_typer(llm_app, name="llm")
