"""`magv import trajectories`: OpenAI chat messages in, trajectories, labels and MCTs out, and back."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from magv.cli import main
from magv.errors import BadInput
from magv.interchange import run_to_record
from magv.messages import messages_to_trajectory, trajectory_to_messages
from magv.models import Question, Run, Step, ToolCall, Trajectory
from magv.store import Store
from magv.verify.features import FEATURE_VERSION, NEUTRAL, compute_features
from magv.verify.importer import import_trajectories

FIXTURE = Path(__file__).resolve().parent / "fixtures" / "import_multiturn.jsonl"


def _lines() -> list[dict]:
    return [json.loads(line) for line in FIXTURE.read_text().splitlines()]


def test_multiturn_file_imports_calls_in_order_with_results_errors_and_response(tmp_store):
    result = import_trajectories(tmp_store, FIXTURE)
    assert (result.lines, result.questions, result.runs, result.labels, result.mct) == (4, 2, 4, 2, 2)
    qid = result.question_ids["conv-1"]
    q = tmp_store.questions(ids=[qid])[0]
    assert (q.origin, q.group_id, q.domain) == ("import", "conv-1", "imported")
    assert q.meta["import"]["runs"]["0"]["user_turns"] == ["Yes, to 3 rue Neuve, Paris."]

    runs = {r.run_index: r for r in tmp_store.runs([qid])}
    t = runs[0].trajectory
    # Parallel calls keep the order of the assistant message, not of the tool replies.
    assert t.tool_names() == ["get_order", "find_customer", "update_address"]
    assert t.steps[0].result == {"status": "shipped", "city": "Lyon"}
    assert t.steps[1].result == "customer 77 (Ana)"
    assert t.response == "Done: the order now goes to 3 rue Neuve, Paris."
    assert runs[0].latency_s == 1.5 and runs[0].prompt_tokens == 420
    assert runs[2].trajectory.steps[2].error == "address not deliverable"

    conv2 = tmp_store.runs([result.question_ids["conv-2"]])[0].trajectory
    assert [s.kind for s in conv2.steps] == ["invalid", "tool"]
    assert conv2.steps[0].raw == "I will cancel {order"

    mct = {m["question_id"]: m for m in tmp_store.mct()}[qid]
    assert mct["run_id"] == runs[0].id and mct["n_runs"] == 3 and mct["n_distinct"] == 2
    assert mct["share"] == pytest.approx(2 / 3)
    labels = {lb.run_id: lb for lb in tmp_store.labels()}
    assert labels[runs[0].id].correct is True and labels[runs[0].id].source == "import"
    assert runs[1].id not in labels


def test_imported_file_round_trips_line_for_line(tmp_store):
    result = import_trajectories(tmp_store, FIXTURE)
    labels = {lb.run_id: lb.correct for lb in tmp_store.labels()}
    by_id = {q.id: q for q in tmp_store.questions()}
    exported = [run_to_record(by_id[r.question_id], r, labels.get(r.id)) for r in tmp_store.runs()]
    assert sorted(exported, key=lambda d: (d["question_id"], d["run"])) == sorted(
        _lines(), key=lambda d: (d["question_id"], d["run"])
    )
    # Re-importing the export of the export changes nothing.
    again = Path("again.jsonl")
    again.write_text("".join(json.dumps(e) + "\n" for e in exported))
    second = import_trajectories(tmp_store, again)
    assert (second.questions, second.runs, second.skipped_runs) == (0, 0, 4)
    assert second.question_ids == result.question_ids


def test_magv_runs_round_trip_through_canonical_messages():
    t = Trajectory(
        steps=[
            Step(call=ToolCall(name="find_customer", arguments={"email": "a@b.c"}), result={"id": 7}),
            Step(kind="invalid", raw='{"tool": "get_order"'),
            Step(call=ToolCall(name="get_order", arguments={"order_id": 3}), error="no such order"),
            Step(call=ToolCall(name="list_orders", arguments={}), result=["x", "y"]),
        ],
        response="You have two orders.",
    )
    messages = trajectory_to_messages("my orders?", t)
    back, turns = messages_to_trajectory(messages)
    assert turns == []
    assert back == t
    stopped = t.model_copy(update={"response": None, "status": "max_steps"})
    assert messages_to_trajectory(trajectory_to_messages("q", stopped), status="max_steps")[0] == stopped


def test_export_record_of_a_generated_run_imports_back(tmp_store):
    q = Question(id="q1", domain="retail", text="Where is order 5?", origin="investigator", group_id="s1")
    t = Trajectory.from_calls([ToolCall(name="get_order", arguments={"order_id": 5})], response="shipped")
    run = Run(id="r1", question_id="q1", run_index=0, trajectory=t, prompt_tokens=11, latency_s=0.25)
    path = Path("one.jsonl")
    path.write_text(json.dumps(run_to_record(q, run, True)) + "\n")
    result = import_trajectories(tmp_store, path, domain="retail")
    back = tmp_store.runs([result.question_ids["q1"]])[0]
    assert back.trajectory.calls == t.calls and back.trajectory.response == "shipped"
    assert back.prompt_tokens == 11 and back.latency_s == 0.25


def _write(lines: list) -> Path:
    path = Path("bad.jsonl")
    path.write_text("".join((x if isinstance(x, str) else json.dumps(x)) + "\n" for x in lines))
    return path


def _good(run: int = 0, **over) -> dict:
    line = _lines()[3]
    line["run"] = run
    line.update(over)
    return line


def _called(arguments: object, *after: dict) -> list[dict]:
    """A user question, an assistant call of f (id a1) with these arguments, then `after`."""
    call = {"id": "a1", "type": "function", "function": {"name": "f", "arguments": arguments}}
    return [
        {"role": "user", "content": "q"},
        {"role": "assistant", "content": None, "tool_calls": [call]},
        *after,
    ]


BAD = {
    "broken JSON": (['{"question_id": "a", '], "not valid JSON"),
    "run not int": ([_good(run="1")], "run: expected an integer"),
    "run bool": ([_good(run=True)], "run: expected an integer"),
    "no role": ([_good(messages=[{"content": "hi"}])], "messages[0].role"),
    "messages not a list": ([_good(messages={"role": "user"})], "expected a non-empty list"),
    "tool id mismatch": (
        [_good(messages=_called("{}", {"role": "tool", "tool_call_id": "zz", "content": "x"}))],
        "messages[2].tool_call_id: 'zz' does not match",
    ),  # fmt: skip
    "tool message answering no call": (
        [
            _good(
                messages=[
                    {"role": "user", "content": "q"},
                    {"role": "tool", "tool_call_id": "a1", "content": "x"},
                ]
            )
        ],
        "messages[1].tool_call_id: 'a1' does not match",
    ),  # fmt: skip
    "id reused while its call waits": (
        [
            _good(
                messages=_called(
                    "{}",
                    {
                        "role": "assistant",
                        "content": None,
                        "tool_calls": [
                            {"id": "a1", "type": "function", "function": {"name": "g", "arguments": "{}"}}
                        ],
                    },
                )
            )
        ],
        "messages[2].tool_calls[0].id: 'a1' is used by an earlier tool call still awaiting its result",
    ),  # fmt: skip
    "unknown role": (
        [_good(messages=[{"role": "robot", "content": "hi"}])],
        "messages[0].role: expected one of",
    ),
    "unknown LangChain type": (
        [_good(messages=[{"type": "humanoid", "content": "hi"}])],
        "messages[0].type: expected a LangChain",
    ),
    "LangChain args not an object": (
        [
            _good(
                messages=[
                    {"type": "human", "content": "q"},
                    {"type": "ai", "content": "", "tool_calls": [{"name": "f", "args": "x=1", "id": "1"}]},
                ]
            )
        ],
        "messages[1].tool_calls[0].args: expected an object",
    ),  # fmt: skip
    "group_id not a string": ([_good(group_id=3)], "group_id: expected a non-empty string"),
    "reference not a list": ([_good(reference={"name": "f"})], "reference: expected a list"),
    "arguments not a string": (
        [_good(messages=_called({"x": 1}, {"role": "tool", "tool_call_id": "a1", "content": "x"}))],
        "function.arguments: expected a JSON string",
    ),  # fmt: skip
    "unknown field": ([_good(extra=1)], "unknown field 'extra'"),
    "label not bool": ([_good(label="yes")], "label: expected true, false or null"),
    "duplicate run": ([_good(0), _good(0)], "run 0 repeats line 2"),
}


@pytest.mark.parametrize("case", sorted(BAD))
def test_bad_files_name_the_line_and_write_nothing(tmp_store, case):
    lines, expected = BAD[case]
    lines = [_good(run=9), *lines]  # a good first line must not be written either
    path = _write(lines)
    with pytest.raises(BadInput) as err:
        import_trajectories(tmp_store, path)
    assert f"{path}:{len(lines)}:" in str(err.value)
    assert expected in str(err.value)
    counts = tmp_store.counts()
    assert counts["questions"] == counts["runs"] == counts["labels"] == counts["mct"] == 0


def test_cli_import_exit_codes(tmp_path, capsys):
    assert main(["import", "trajectories", str(FIXTURE), "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["runs"] == 4 and out["questions"] == 2
    bad = _write([_good(), "{oops"])
    assert main(["import", "trajectories", str(bad)]) == 2
    assert f"{bad}:2: not valid JSON" in capsys.readouterr().err.replace("\n", "")
    with Store(tmp_path / "data" / "magv.duckdb") as store:
        assert store.counts()["runs"] == 4


def test_imported_repeated_runs_get_self_consistency_features_without_alternates(tmp_store):
    import_trajectories(tmp_store, FIXTURE)
    assert compute_features(tmp_store, None, alternates=False, mct_only=True) == 2
    rows = {f.run_id: f.values for f in tmp_store.features(FEATURE_VERSION)}
    conv1 = next(v for v in rows.values() if v["n_runs"] == 3)
    assert conv1["mct_share"] == pytest.approx(2 / 3) and conv1["n_distinct"] == 2
    assert conv1["distinct_ratio"] == pytest.approx(2 / 3)
    assert conv1["n_alternates"] == 0 and conv1["em_mean"] == NEUTRAL and conv1["ss_min"] == NEUTRAL
    assert conv1["n_calls"] == 3 and conv1["n_tool_errors"] == 0


# -- real logs: normalisations, groups, references, re-import ---------------------------------------

REAL = Path(__file__).resolve().parent / "fixtures" / "import_real_logs.jsonl"
REAL_COUNTS = {
    "reused_call_id": 1,  # line 1: call_1 used again once get_order had its result
    "missing_call_id": 2,  # line 4: two calls without an id ...
    "tool_result_by_order": 2,  # ... answered by tool messages without tool_call_id
    "call_without_result": 1,  # line 5: cancel_order never got a tool message
    "question_from_messages": 1,  # line 6: no "question" field
    "langchain_messages": 6,  # line 2: human / ai / tool dicts
    "parallel_groups": 1,  # line 3: get_order and find_customer in one assistant message
    "extra_user_turns": 1,  # line 6: "Number 7."
}


def test_real_logs_import_with_every_normalisation_counted(tmp_store):
    result = import_trajectories(tmp_store, REAL)
    assert result.normalised == REAL_COUNTS
    assert result.first_seen["reused_call_id"] == f"{REAL}:1: messages[4].tool_calls[0].id"
    assert result.first_seen["call_without_result"] == f"{REAL}:5: messages[3].tool_calls[0]"
    # Two tasks whose simulated users open differently: one question per group, three runs each.
    assert (result.lines, result.questions, result.runs, result.mct) == (6, 2, 6, 2)
    assert result.question_ids["task-a"] != result.question_ids["task-b"]
    qa = tmp_store.questions(ids=[result.question_ids["task-a"]])[0]
    assert qa.group_id == "task-a" and qa.text == "Please send order 1042 to 3 rue Neuve, Paris."
    kept = qa.meta["import"]["runs"]
    assert kept["1"]["question"] == "hi, I moved. order 1042 should go to 3 rue Neuve, Paris"

    runs = {(r.question_id, r.run_index): r.trajectory for r in tmp_store.runs()}
    a, b = result.question_ids["task-a"], result.question_ids["task-b"]
    assert runs[a, 0].tool_names() == ["get_order", "update_address"]
    assert runs[a, 0].steps[1].result == {"ok": True}  # the reused id answered the second call
    assert runs[a, 1].tool_names() == ["get_order", "update_address"]  # LangChain dicts
    parallel = runs[a, 2]
    assert [(c.name, c.group) for c in parallel.calls] == [
        ("get_order", 0), ("find_customer", 0), ("update_address", None)
    ]  # fmt: skip
    assert parallel.steps[1].result == "customer 77 (Ana)"
    assert [s.result for s in runs[b, 0].steps] == [{"status": "pending"}, {"ok": True}]
    unanswered = runs[b, 1]
    assert unanswered.tool_names() == ["get_order", "cancel_order"]
    assert unanswered.steps[1].result is None and unanswered.steps[1].error is None
    assert unanswered.response == "I have asked for order 7 to be cancelled."
    qb = tmp_store.questions(ids=[b])[0]
    assert qb.meta["import"]["runs"]["2"]["user_turns"] == ["Number 7."]
    assert qb.meta["import"]["runs"]["2"]["question"] == "Can you cancel my order?"

    # 1042.0 in the LangChain run is the number 1042: runs 0 and 1 vote for one trajectory.
    mct = {m["question_id"]: m for m in tmp_store.mct()}
    assert (mct[a]["n_runs"], mct[a]["n_distinct"]) == (3, 2) and mct[a]["share"] == pytest.approx(2 / 3)
    assert (mct[b]["n_runs"], mct[b]["n_distinct"]) == (3, 1)
    labels = {lb.run_id: lb for lb in tmp_store.labels()}
    by_key = {(r.question_id, r.run_index): r.id for r in tmp_store.runs()}
    # Line 2 has no label but a reference: strict match with exact arguments, 1042.0 == 1042.
    ref = labels[by_key[a, 1]]
    assert ref.correct is True and ref.detail == "reference:strict+arguments:import_real_logs.jsonl:2"
    assert labels[by_key[a, 2]].correct is False and by_key[b, 2] not in labels
    assert result.labels == 5 and result.reference_labels == 1


def test_real_logs_export_back_to_their_lines(tmp_store):
    import_trajectories(tmp_store, REAL)
    labels = {lb.run_id: lb.correct for lb in tmp_store.labels()}
    by_id = {q.id: q for q in tmp_store.questions()}
    exported = {(e["question_id"], e["run"]): e for r in tmp_store.runs()
                if (e := run_to_record(by_id[r.question_id], r, labels.get(r.id)))}  # fmt: skip
    for line in (json.loads(x) for x in REAL.read_text().splitlines()):
        out = exported[line["question_id"], line["run"]]
        group = line.pop("task_id", None) or line.pop("group_id")
        assert out.pop("group_id") == group
        if "question" not in line:  # the normalised line says what it took as the question
            assert out.pop("question") == line["messages"][0]["content"]
        if line["label"] is None and "reference" in line:
            assert out.pop("label") is True
            line.pop("label")
        assert out == line


def test_strict_refuses_every_normalisation_naming_line_and_field(tmp_store):
    with pytest.raises(BadInput) as err:
        import_trajectories(tmp_store, REAL, strict=True)
    assert f"{REAL}:1: messages[4].tool_calls[0].id: a tool call id used again" in str(err.value)
    assert "--strict" in str(err.value)
    assert tmp_store.counts()["runs"] == 0
    for n, kind in ((4, "a tool call without an id"), (5, "never got a tool message"), (6, 'no "question"')):
        path = _write([REAL.read_text().splitlines()[n - 1]])
        with pytest.raises(BadInput, match=kind) as err:
            import_trajectories(tmp_store, path, strict=True)
        assert str(err.value).startswith(f"{path}:1:")
    # What is only another accepted form (LangChain dicts, parallel calls) passes under --strict.
    path = _write(REAL.read_text().splitlines()[1:3])
    assert import_trajectories(tmp_store, path, strict=True).runs == 2


def test_cli_summary_shows_the_normalisations(tmp_path, capsys):
    assert main(["import", "trajectories", str(REAL), "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["normalised"] == REAL_COUNTS and out["runs"] == 6 and out["reference_labels"] == 1
    again = tmp_path / "b.jsonl"
    again.write_text(REAL.read_text().splitlines()[3] + "\n")
    assert main(["import", "trajectories", str(again)]) == 0
    text = " ".join(capsys.readouterr().out.split())
    assert "1 runs were already stored" in text
    assert "2 x a tool call without an id" in text
    assert main(["import", "trajectories", str(REAL), "--strict"]) == 2
    assert "refused under --strict" in capsys.readouterr().err.replace("\n", "")


def test_group_lines_keep_today_rule_without_group(tmp_store):
    one = _good(run=0, question_id="t", question="first words")
    two = _good(run=1, question_id="t", question="other words")
    with pytest.raises(BadInput, match=r"bad.jsonl:2: question_id 't' has another question text .*group_id"):
        import_trajectories(tmp_store, _write([one, two]))
    mixed = [dict(one, group_id="g"), dict(two, group_id="h")]
    with pytest.raises(BadInput, match=r"bad.jsonl:2: group_id: question_id 't' is in group 'h' here"):
        import_trajectories(tmp_store, _write(mixed))
    assert (
        import_trajectories(tmp_store, _write([dict(one, group_id="g"), dict(two, group_id="g")])).runs == 2
    )


def _changed_line(n: int, **over) -> str:
    line = json.loads(REAL.read_text().splitlines()[n - 1])
    line.update(over)
    return json.dumps(line)


def test_reimport_with_other_content_is_refused_naming_the_line(tmp_store):
    import_trajectories(tmp_store, REAL)
    before = tmp_store.counts()
    stored = {r.id: r.trajectory for r in tmp_store.runs()}
    lines = REAL.read_text().splitlines()
    messages = json.loads(lines[0])["messages"][:4] + [{"role": "assistant", "content": "It is processing."}]
    lines[0] = _changed_line(1, messages=messages, label=False)
    path = _write(lines)
    with pytest.raises(BadInput) as err:
        import_trajectories(tmp_store, path)
    assert f"{path}:1: group_id 'task-a' run 0 is already stored with other content" in str(err.value)
    assert "--replace" in str(err.value)
    assert tmp_store.counts() == before
    assert {r.id: r.trajectory for r in tmp_store.runs()} == stored
    # The same file again is no conflict: every run is already stored.
    assert import_trajectories(tmp_store, REAL).skipped_runs == 6


def test_replace_swaps_the_whole_run_label_and_derived_rows(tmp_store):
    first = import_trajectories(tmp_store, REAL)
    a = first.question_ids["task-a"]
    run0 = next(r for r in tmp_store.runs([a]) if r.run_index == 0)
    assert compute_features(tmp_store, None, alternates=False) >= 2
    assert any(f.run_id == run0.id for f in tmp_store.features(FEATURE_VERSION))
    messages = json.loads(REAL.read_text().splitlines()[0])["messages"][:4]
    messages.append({"role": "assistant", "content": "It is processing."})
    path = _write([_changed_line(1, messages=messages, label=False, meta={"reward": 0.0})])
    result = import_trajectories(tmp_store, path, replace=True)
    assert (result.replaced_runs, result.runs, result.skipped_runs) == (1, 0, 0)
    after = next(r for r in tmp_store.runs([a]) if r.run_index == 0)
    assert after.id == run0.id and after.trajectory.tool_names() == ["get_order"]
    assert after.trajectory.response == "It is processing."
    labels = [lb for lb in tmp_store.labels() if lb.run_id == run0.id]
    assert [(lb.source, lb.correct) for lb in labels] == [("import", False)]
    # Features compare siblings: none of the question's runs keeps a row computed from the old run.
    ids_a = {r.id for r in tmp_store.runs([a])}
    assert not ids_a & {f.run_id for f in tmp_store.features(FEATURE_VERSION)}
    kept = tmp_store.questions(ids=[a])[0].meta["import"]["runs"]["0"]
    assert kept["meta"] == {"reward": 0.0} and kept["messages"] == messages
    mct = {m["question_id"]: m for m in tmp_store.mct()}[a]
    assert mct["n_runs"] == 3
    # The other runs and the other task are untouched.
    assert len(tmp_store.runs()) == 6 and tmp_store.counts()["questions"] == 2


def test_grouped_trajectory_round_trips_through_canonical_messages():
    t = Trajectory(
        steps=[
            Step(call=ToolCall(name="get_order", arguments={"order_id": 1}, group=0), result={"s": 1}),
            Step(call=ToolCall(name="find_customer", arguments={"order_id": 1}, group=0), result="ana"),
            Step(call=ToolCall(name="update_address", arguments={"a": "x"}), result=True),
        ],
        response="ok",
    )
    messages = trajectory_to_messages("q", t)
    assert [len(m.get("tool_calls") or []) for m in messages if m["role"] == "assistant"] == [2, 1, 0]
    assert messages_to_trajectory(messages)[0] == t


CONFLICTS = {
    "another question text": lambda lines: [
        x.update(question="Where is order 1042 now?") for x in lines if x["question_id"] == "conv-1"
    ],
    "another trajectory": lambda lines: lines[0].update(
        messages=lines[0]["messages"][:2] + lines[0]["messages"][-1:]
    ),
    "another label": lambda lines: lines[0].update(label=False),
    "another meta": lambda lines: lines[0].update(meta={**lines[0]["meta"], "session": "s-9"}),
}


@pytest.mark.parametrize("case", sorted(CONFLICTS))
def test_cli_reimport_conflict_exits_2_naming_the_line_and_changes_nothing(tmp_path, capsys, case):
    assert main(["import", "trajectories", str(FIXTURE)]) == 0
    with Store(tmp_path / "data" / "magv.duckdb") as store:
        before, runs, labels = store.counts(), store.runs(), store.labels()
    lines = _lines()
    CONFLICTS[case](lines)
    path = tmp_path / "again.jsonl"
    path.write_text("".join(json.dumps(x) + "\n" for x in lines))
    capsys.readouterr()
    assert main(["import", "trajectories", str(path)]) == 2
    err = " ".join(capsys.readouterr().err.split())
    assert f"{path}:1: question_id 'conv-1'" in err and "already stored with" in err and "--replace" in err
    with Store(tmp_path / "data" / "magv.duckdb") as store:
        assert store.counts() == before
        assert store.runs() == runs and [(lb.run_id, lb.correct) for lb in store.labels()] == [
            (lb.run_id, lb.correct) for lb in labels
        ]


# -- logs written elsewhere: tool errors as text, the agent's last words, the tools' spec -----------


def _call(i: int, name: str, args: dict) -> dict:
    return {"role": "assistant", "content": None,
            "tool_calls": [{"id": f"call_{i}", "type": "function",
                            "function": {"name": name, "arguments": json.dumps(args)}}]}  # fmt: skip


def _tool(i: int, content: str) -> dict:
    return {"role": "tool", "tool_call_id": f"call_{i}", "content": content}


def _customer_log(run: int) -> dict:
    """A conversation as benchmark logs write it: the customer speaks last (###STOP###), tools
    fail with text that starts with "Error:"."""
    messages = [
        {"role": "system", "content": "You are an airline agent."},
        {"role": "user", "content": "Please cancel reservation ABC."},
        _call(0, "cancel_reservation", {"reservation_id": "ABC"}),
        _tool(0, "Error: reservation ABC cannot be cancelled"),
        {"role": "assistant", "content": "I am sorry, ABC cannot be cancelled."},
        {"role": "user", "content": "Ok, thanks. ###STOP###"},
    ]
    return {"question_id": "t-1", "group_id": "t-1", "question": "Please cancel reservation ABC.", "run": run,
            "messages": messages, "label": False}  # fmt: skip


def _handoff_log(run: int) -> dict:
    """A conversation that ends with a tool result: the agent speaks, then hands off."""
    messages = [
        {"role": "user", "content": "I want a refund for everything."},
        _call(0, "get_user_details", {"user_id": "u1"}),
        _tool(0, json.dumps({"name": "U"})),
        {"role": "assistant", "content": "I will hand you over to a colleague."},
        _call(1, "transfer_to_human_agents", {"summary": "refund"}),
        _tool(1, "Transfer successful"),
    ]
    return {"question_id": "t-2", "group_id": "t-2", "question": "I want a refund for everything.", "run": run,
            "messages": messages, "label": True}  # fmt: skip


TOOL_SPEC = [
    {"type": "function", "function": {"name": "cancel_reservation", "parameters": {}}, "writes": True},
    {"type": "function", "function": {"name": "get_user_details", "parameters": {}}, "writes": False},
    {"type": "function", "function": {"name": "transfer_to_human_agents", "parameters": {}}},
]


def test_default_rule_reads_error_text_and_error_json_and_nothing_else():
    from magv.definitions import DEFAULT_TOOL_ERRORS as rule
    from magv.messages import _tool_result

    assert _tool_result("Error: reservation not found") == (None, "Error: reservation not found")
    assert _tool_result("error - no seat") == (None, "error - no seat")
    assert _tool_result(json.dumps({"error": "nope"})) == (None, "nope")
    # an error beside other fields keeps them as the result
    assert _tool_result(json.dumps({"error": "late", "code": 3})) == ({"error": "late", "code": 3}, "late")
    for fine in (
        "No errors found",
        "Errors are rare",
        '"Error"',
        json.dumps({"error": None, "ok": 1}),
        "3.0",
    ):
        assert _tool_result(fine)[1] is None, fine
    assert rule.error_of("  Error: x", "  Error: x") == "Error: x"


def test_a_pattern_sets_another_rule_and_a_bad_one_is_refused_naming_its_source():
    import time

    from magv.definitions import ToolErrorRule
    from magv.messages import _tool_result

    rule = ToolErrorRule(r"^(FAIL|DENIED)\b", "--tool-error-pattern")
    assert _tool_result("DENIED: no", errors=rule) == (None, "DENIED: no")
    assert _tool_result("Error: not by this rule", errors=rule) == ("Error: not by this rule", None)
    assert _tool_result(json.dumps({"error": "still"}), errors=rule) == (None, "still")  # JSON always
    with pytest.raises(BadInput, match=r"--tool-error-pattern: '\(unclosed' is not a regular expression"):
        ToolErrorRule("(unclosed", "--tool-error-pattern")
    with pytest.raises(BadInput, match="at most 500"):
        ToolErrorRule("a" * 501)
    # a pattern that backtracks without end is stopped, not left to hang the import
    slow = ToolErrorRule(r"(x+x+)+y", "domain.toml: tool_error_pattern")
    started = time.perf_counter()
    try:
        slow.matches("x" * 5000)
    except BadInput as exc:
        assert "domain.toml: tool_error_pattern" in str(exc) and "simpler pattern" in str(exc)
    assert time.perf_counter() - started < 2.0


def test_logs_ending_with_the_customer_or_a_tool_keep_the_agents_last_words(tmp_store):
    path = _write([_customer_log(0), _customer_log(1), _handoff_log(0)])
    result = import_trajectories(tmp_store, path)
    assert result.normalised["tool_errors"] == 2 and result.normalised["response_before_end"] == 3
    runs = {(r.question_id, r.run_index): r.trajectory for r in tmp_store.runs()}
    told = runs[result.question_ids["t-1"], 0]
    assert told.response == "I am sorry, ABC cannot be cancelled." and told.response_at is None
    assert told.steps[0].error == "Error: reservation ABC cannot be cancelled"
    handed = runs[result.question_ids["t-2"], 0]
    assert handed.response == "I will hand you over to a colleague."
    assert [s.call.name for s in handed.steps_after_response()] == ["transfer_to_human_agents"]
    # the lines export back as they came
    by_id = {q.id: q for q in tmp_store.questions()}
    record = run_to_record(by_id[result.question_ids["t-2"]], tmp_store.runs([result.question_ids["t-2"]])[0])
    assert record["messages"] == _handoff_log(0)["messages"]


def test_a_tool_spec_makes_the_write_features_work_on_logs(tmp_store, tmp_path):
    from magv.verify.toolspec import log_tools

    spec = tmp_path / "tools.json"
    spec.write_text(json.dumps(TOOL_SPEC))
    tools = log_tools(tool_file=spec)
    assert tools.writes == {"cancel_reservation"} and len(tools.names) == 3
    lines = [_customer_log(0), _customer_log(1), _customer_log(2)]
    lines[2]["messages"][2] = _call(0, "cancel_reservation", {"reservation_id": "XYZ"})
    path = _write(lines)
    result = import_trajectories(tmp_store, path, tools=tools)
    assert result.tools == {"source": str(spec), "known": 3, "writes": 1, "called": 1, "called_known": 1,
                            "called_writes": 1, "error_pattern": tools.errors.pattern}  # fmt: skip
    q = tmp_store.questions(ids=[result.question_ids["t-1"]])[0]
    assert q.meta["import"]["write_tools"] == ["cancel_reservation"]
    compute_features(tmp_store, None, alternates=False)
    rows = {r.run_index: tmp_store_features(tmp_store)[r.id] for r in tmp_store.runs()}
    assert [rows[i]["sibling_same_writes"] for i in range(3)] == [0.5, 0.5, 0.0]
    assert [rows[i]["n_writes"] for i in range(3)] == [1.0, 1.0, 1.0]
    assert [rows[i]["n_write_errors"] for i in range(3)] == [1.0, 1.0, 1.0]


def tmp_store_features(store) -> dict[str, dict[str, float]]:
    return {f.run_id: f.values for f in store.features(FEATURE_VERSION)}


@pytest.mark.parametrize(
    "spec, message",
    [
        ("[]", "expected a non-empty JSON list of OpenAI function specs"),
        ("{", "not JSON"),
        ('[{"function": {"name": "a"}, "writes": "yes"}]', r"\[0\] \(a\): writes: expected true or false"),
        ('[{"function": {}}]', r"\[0\]: expected \"function\""),
        ('[{"name": "a"}, {"name": "a"}]', r"\[1\]: 'a' is specified twice"),
    ],
)
def test_a_bad_tool_spec_is_refused_naming_the_entry(tmp_path, spec, message):
    from magv.verify.toolspec import read_tool_file

    path = tmp_path / "tools.json"
    path.write_text(spec)
    with pytest.raises(BadInput, match=message):
        read_tool_file(path)


def test_cli_import_counts_errors_responses_and_tools(tmp_path, capsys):
    spec = tmp_path / "tools.json"
    spec.write_text(json.dumps(TOOL_SPEC))
    logs = tmp_path / "logs.jsonl"
    logs.write_text("".join(json.dumps(x) + "\n" for x in (_customer_log(0), _handoff_log(0))))
    db = tmp_path / "a.duckdb"
    assert main(["--database", str(db), "import", "trajectories", str(logs), "--tools", str(spec)]) == 0
    text = " ".join(capsys.readouterr().out.split())
    assert "1 x tool results read as errors" in text
    assert "2 x responses taken from the agent's last words before the end" in text
    assert "tools: 3 called, 3 of them known" in text and "1 of them write (1 write tools known)" in text
    # another rule: "Error:" text is no longer an error, "Transfer" is
    db2 = tmp_path / "b.duckdb"
    args = [
        "--database",
        str(db2),
        "import",
        "trajectories",
        str(logs),
        "--tool-error-pattern",
        "^Transfer",
        "--json",
    ]
    assert main(args) == 0
    assert json.loads(capsys.readouterr().out)["normalised"]["tool_errors"] == 1
    assert (
        main(["--database", str(db2), "import", "trajectories", str(logs), "--tool-error-pattern", "("]) == 2
    )
    assert "--tool-error-pattern" in capsys.readouterr().err


def test_a_response_before_later_calls_round_trips_through_canonical_messages():
    t = Trajectory(steps=[Step(call=ToolCall(name="get_user", arguments={"id": 1}), result={"n": 1}),
                          Step(call=ToolCall(name="transfer", arguments={}), result="ok")],
                   response="I will hand you over.", response_at=1)  # fmt: skip
    messages = trajectory_to_messages("help", t)
    assert [m["role"] for m in messages] == ["user", "assistant", "tool", "assistant", "tool"]
    assert messages[3]["content"] == "I will hand you over." and messages[3]["tool_calls"]
    assert messages_to_trajectory(messages)[0] == t
