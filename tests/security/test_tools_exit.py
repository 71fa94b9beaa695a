"""A tool that calls sys.exit() or raises any BaseException is a recorded tool error: the session
goes on, and a tool's own KeyboardInterrupt never looks like the user's Ctrl-C."""

from __future__ import annotations

import sys

import pytest

from magv.domains import Domain, tool
from magv.models import ToolCall
from tests.domains_helpers import USER_DOMAIN


class Odd(BaseException):
    pass


def _generate(db, seed):
    db.execute("CREATE TABLE t AS SELECT 1 AS x")


@tool("Exits.")
def exits(db):
    sys.exit(3)


@tool("Exits after a write.", writes=True)
def write_then_exit(db):
    db.execute("UPDATE t SET x = 99")
    sys.exit("bye")


@tool("Interrupts.")
def interrupts(db):
    raise KeyboardInterrupt


@tool("Raises a BaseException of its own.")
def odd(db):
    raise Odd("strange")


@tool("Raises GeneratorExit.")
def generator_exit(db):
    raise GeneratorExit


@tool("Reads.")
def read(db):
    return db.execute("SELECT x FROM t").fetchone()[0]


@pytest.fixture
def pool(tmp_path):
    domain = Domain("exiting", system_prompt="Test.", tools=[exits, write_then_exit, interrupts, odd,
                    generator_exit, read], generate=_generate, seeds_path=USER_DOMAIN / "seeds.jsonl")  # fmt: skip
    pool = domain.sandbox_pool(tmp_path)
    yield pool
    pool.close()


@pytest.mark.parametrize(
    ("name", "expected"),
    [
        ("exits", "exits: the tool called sys.exit(3); a tool cannot stop the run"),
        ("write_then_exit", "write_then_exit: the tool called sys.exit('bye')"),
        ("interrupts", "interrupts: the tool raised KeyboardInterrupt itself (not an interrupt of magv)"),
        ("odd", "odd: Odd: strange"),
        ("generator_exit", "generator_exit: GeneratorExit"),
    ],
)
def test_base_exceptions_of_a_tool_are_tool_errors_and_the_run_goes_on(pool, name, expected):
    with pool.session() as s:
        step = s.execute(ToolCall(name=name, arguments={}))
        after = s.execute(ToolCall(name="read", arguments={}))
    assert step.error.startswith(f"internal_error: {expected}"), step.error
    assert after.ok and after.result == 1  # the half-done write was rolled back


def test_trajectory_records_the_exit_and_keeps_going(pool):
    calls = [ToolCall(name=n, arguments={}) for n in ("read", "exits", "interrupts", "read")]
    steps = pool.run(calls)
    assert [s.ok for s in steps] == [True, False, False, True]
    assert "sys.exit" in steps[1].error and "KeyboardInterrupt" in steps[2].error


def test_a_tool_exit_in_the_agent_loop_is_recorded(pool):
    """The responder runs tools through asyncio.to_thread: a SystemExit must not end the loop."""
    import asyncio

    async def agent():
        with pool.session() as s:
            first = await asyncio.to_thread(s.execute, ToolCall(name="exits", arguments={}))
            second = await asyncio.to_thread(s.execute, ToolCall(name="read", arguments={}))
        return first, second

    first, second = asyncio.run(agent())
    assert first.error.startswith("internal_error: exits:") and second.result == 1
