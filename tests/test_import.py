"""`magv import trajectories`: OpenAI chat messages in, trajectories, labels and MCTs out, and back."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from magv.cli import main
from magv.errors import BadInput
from magv.models import Question, Run, Step, ToolCall, Trajectory
from magv.store import Store
from magv.verify.features import FEATURE_VERSION, NEUTRAL, compute_features
from magv.verify.importer import (
    import_trajectories,
    messages_to_trajectory,
    run_to_record,
    trajectory_to_messages,
)

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
    "unanswered call": (
        [_good(messages=_called("{}"))],
        "'a1' has no tool message",
    ),  # fmt: skip
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
