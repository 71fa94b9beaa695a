"""Domains: the data, tools, system prompt and seed set an assistant works on.

domain = load_domain("retail")            # or a folder path, or "mypkg.mydomain"
with domain.sandbox_pool(data_dir) as pool, pool.session() as sandbox:
    step = sandbox.execute(ToolCall(name="find_customer_by_email", arguments={...}))
"""

from magv.domains.base import Domain, Generator, Sandbox, SandboxPool
from magv.domains.loader import list_domains, load_domain
from magv.domains.tools import Tool, ToolError, make_tool, object_schema, tool

__all__ = [
    "Domain",
    "Generator",
    "Sandbox",
    "SandboxPool",
    "Tool",
    "ToolError",
    "list_domains",
    "load_domain",
    "make_tool",
    "object_schema",
    "tool",
]
