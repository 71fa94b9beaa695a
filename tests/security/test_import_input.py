"""Import and file scoring read data from anywhere: a wrong type at any field is one message with
file, line and field (exit 2), never a traceback; one name cannot merge two questions; a user's call
id cannot take another call's result; an empty name is refused."""

from __future__ import annotations

import copy
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from magv.cli import main
from magv.errors import BadInput
from magv.interchange import check_import_lines
from magv.messages import Notes, read_messages
from magv.verify.importer import import_trajectories

WRONG = ([], ["ok"], {}, {"a": 1}, 7, True, "")


def _openai_line() -> dict[str, Any]:
    return {
        "question_id": "q1", "question": "where is order 7?", "run": 0, "group_id": "g1", "label": True,
        "meta": {"status": "ok", "origin": "import", "latency_s": 1.0, "judge_correct": True},
        "reference": [{"name": "get_order", "arguments": {"order_id": 7}}],
        "messages": [
            {"role": "system", "content": "be brief"},
            {"role": "user", "content": [{"type": "text", "text": "where is order 7?"}]},
            {"role": "assistant", "content": None, "tool_calls": [
                {"id": "c1", "type": "function", "function": {"name": "get_order", "arguments": '{"order_id": 7}'}}]},
            {"role": "tool", "tool_call_id": "c1", "content": '{"status": "shipped"}'},
            {"role": "assistant", "content": "It shipped."},
        ],
    }  # fmt: skip


def _langchain_line() -> dict[str, Any]:
    return {
        "question_id": "q2", "question": "cancel order 8", "run": 0,
        "messages": [
            {"type": "human", "content": "cancel order 8"},
            {"type": "ai", "content": "", "tool_calls": [{"name": "cancel", "args": {"order_id": 8}, "id": "l1",
                                                           "type": "tool_call"}]},
            {"type": "tool", "content": '{"ok": true}', "tool_call_id": "l1"},
            {"type": "ai", "content": "Cancelled."},
        ],
    }  # fmt: skip


def _places(value: Any, path: tuple = ()) -> Iterator[tuple]:
    """Every path to a value inside a JSON document."""
    children = (
        value.items() if isinstance(value, dict) else enumerate(value) if isinstance(value, list) else ()
    )
    for key, child in children:
        yield (*path, key)
        yield from _places(child, (*path, key))


def _replaced(doc: Any, path: tuple, value: Any) -> Any:
    out = copy.deepcopy(doc)
    node = out
    for key in path[:-1]:
        node = node[key]
    node[path[-1]] = value
    return out


@pytest.mark.parametrize("make", [_openai_line, _langchain_line])
def test_any_wrong_type_anywhere_is_a_bad_input_naming_file_and_line(make):
    base = make()
    tried = refused = 0
    for path in _places(base):
        for wrong in WRONG:
            tried += 1
            line = _replaced(base, path, wrong)
            try:
                check_import_lines([(1, "f.jsonl:1", line)], "f.jsonl")
            except BadInput as exc:
                refused += 1
                assert str(exc).startswith("f.jsonl:1"), (path, wrong, str(exc))
            # anything else (TypeError, KeyError, AttributeError...) fails the test with its traceback
    assert refused > tried // 3


@pytest.mark.parametrize(
    ("path", "wrong", "field"),
    [
        (("messages", 1, "role"), ["user"], "messages[1].role"),
        (("meta", "status"), ["ok"], "meta.status"),
        (("messages", 3, "role"), {"x": 1}, "messages[3].role"),
    ],
)
def test_a_list_or_object_where_a_name_is_expected_is_named(path, wrong, field):
    line = _replaced(_openai_line(), path, wrong)
    with pytest.raises(BadInput) as err:
        check_import_lines([(4, "f.jsonl:4", line)], "f.jsonl")
    assert str(err.value).startswith(f"f.jsonl:4: {field}: expected"), str(err.value)


def test_a_langchain_type_that_is_an_object_is_named():
    line = _replaced(_langchain_line(), ("messages", 1, "type"), {})
    with pytest.raises(BadInput, match=r"^f.jsonl:2: messages\[1\].type: expected a LangChain message type"):
        check_import_lines([(2, "f.jsonl:2", line)], "f.jsonl")


def _write(path: Path, lines: list[dict]) -> Path:
    path.write_text("".join(json.dumps(x) + "\n" for x in lines))
    return path


@pytest.mark.parametrize("command", ["import", "score"])
def test_cli_type_errors_exit_2_with_file_line_field(tmp_path, capsys, command):
    bad = _replaced(_openai_line(), ("meta", "status"), ["ok"])
    src = _write(tmp_path / "in.jsonl", [_langchain_line(), bad])
    if command == "import":
        args = ["import", "trajectories", str(src)]
    else:  # the input is read and checked before the model is looked for
        args = ["verify", "score", "--input", str(src), "--model-file", str(tmp_path / "none.skops")]
    assert main(args) == 2
    err = capsys.readouterr().err
    assert f"{src}:2: meta.status: expected one of" in err and "Traceback" not in err
    assert not (tmp_path / "data").exists()


# -- one name, one question ----------------------------------------------------------------------


def _simple(qid: str, run: int = 0, group: str | None = None, text: str = "where is order 7?") -> dict:
    line = {"question_id": qid, "question": text, "run": run, "messages": [
        {"role": "user", "content": text}, {"role": "assistant", "content": "It shipped."}]}  # fmt: skip
    if group is not None:
        line["group_id"] = group
    return line


@pytest.mark.parametrize("order", ["question first", "group first"])
def test_a_group_id_equal_to_another_lines_question_id_is_refused(tmp_store, tmp_path, order):
    plain = _simple("q1", text="cancel order 8")
    grouped = _simple("other", group="q1", text="where is order 7?")
    lines = [plain, grouped] if order == "question first" else [grouped, plain]
    path = _write(tmp_path / "in.jsonl", lines)
    with pytest.raises(BadInput) as err:
        import_trajectories(tmp_store, path)
    field = "group_id" if order == "question first" else "question_id"
    assert f"{path}:2: {field}: 'q1'" in str(err.value) and "line 1" in str(err.value)
    assert tmp_store.counts()["questions"] == 0


def test_a_group_may_carry_the_question_id_of_its_own_lines(tmp_store, tmp_path):
    path = _write(tmp_path / "in.jsonl", [_simple("t1", 0, "t1"), _simple("t2", 1, "t1", "other words")])
    result = import_trajectories(tmp_store, path)
    assert (result.questions, result.runs) == (1, 2)


def test_a_group_id_equal_to_a_stored_question_id_is_refused(tmp_store, tmp_path):
    import_trajectories(tmp_store, _write(tmp_path / "a.jsonl", [_simple("q1", text="cancel order 8")]))
    later = _write(tmp_path / "b.jsonl", [_simple("other", group="q1")])
    with pytest.raises(BadInput, match="group_id: 'q1' is stored as the question_id of another question"):
        import_trajectories(tmp_store, later)
    assert tmp_store.counts()["runs"] == 1


# -- call ids ------------------------------------------------------------------------------------


def test_a_call_id_that_looks_like_an_internal_placeholder_keeps_its_own_result():
    lookalike = "\x00missing-1-1"  # what magv named the second id-less call of message 1
    messages = [
        {"role": "user", "content": "q"},
        {"role": "assistant", "content": None, "tool_calls": [
            {"id": lookalike, "type": "function", "function": {"name": "first", "arguments": "{}"}},
            {"type": "function", "function": {"name": "second", "arguments": "{}"}}]},
        {"role": "tool", "tool_call_id": lookalike, "content": '{"for": "first"}'},
        {"role": "tool", "content": '{"for": "second"}'},
    ]  # fmt: skip
    trajectory, _ = read_messages(messages, "ok", "messages", Notes())
    assert [(s.call.name, s.result) for s in trajectory.steps] == [
        ("first", {"for": "first"}), ("second", {"for": "second"})]  # fmt: skip


# -- empty names -----------------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["", "   "])
@pytest.mark.parametrize("command", ["import", "score", "serve"])
def test_an_empty_domain_is_refused(tmp_path, capsys, name, command):
    src = _write(tmp_path / "in.jsonl", [_simple("q1")])
    args = {
        "import": ["import", "trajectories", str(src), "--domain", name],
        "score": ["verify", "score", "--input", str(src), "--model-file", str(src), "--domain", name],
        "serve": ["serve", "verifier", "--model-file", str(src), "--domain", name, "--port", "0"],
    }[command]
    assert main(args) == 2
    assert "--domain: expected a name" in capsys.readouterr().err
    assert not (tmp_path / "data").exists()


def test_import_lines_refuse_an_empty_domain(tmp_store, tmp_path):
    path = _write(tmp_path / "in.jsonl", [_simple("q1")])
    with pytest.raises(BadInput, match="domain: expected a name"):
        import_trajectories(tmp_store, path, domain=" ")
    assert tmp_store.counts()["questions"] == 0
