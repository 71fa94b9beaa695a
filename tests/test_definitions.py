"""The shared definitions (magv/definitions.py) and that their users agree: the export's
`--verified-only` and the demonstrations pick the same trajectories."""

from __future__ import annotations

from datetime import datetime, timedelta

from magv.definitions import effective_labels, is_tool_error, is_verified, tool_error_count
from magv.models import Label, Step, ToolCall, Trajectory
from tests.test_demonstrations import _verified_store

T0 = datetime(2026, 1, 1)


def test_the_most_trusted_source_wins_and_within_a_source_the_newest():
    labels = [
        Label(run_id="r1", source="gold", correct=True, created_at=T0 + timedelta(days=3)),
        Label(run_id="r1", source="human", correct=False, created_at=T0),
        Label(run_id="r1", source="import", correct=True, created_at=T0 + timedelta(days=2)),
        Label(run_id="r2", source="gold", correct=True, created_at=T0),
        Label(run_id="r2", source="gold", correct=False, created_at=T0 + timedelta(hours=1)),
    ]
    won = effective_labels(labels)
    assert (won["r1"].source, won["r1"].correct) == ("human", False)  # older, but a person
    assert won["r2"].correct is False  # the newer gold label
    assert effective_labels(reversed(labels)) == won  # order of the rows does not matter


def test_a_tool_error_is_a_tool_step_with_an_error_as_a_model_or_as_stored_json():
    failed = Step(call=ToolCall(name="get_order", arguments={}), error="not found")
    fine = Step(call=ToolCall(name="get_order", arguments={}), result={"id": 1})
    invalid = Step(kind="invalid", raw="{oops", error="unparseable reply")
    blank = Step(call=ToolCall(name="get_order", arguments={}), error="")
    assert [is_tool_error(s) for s in (failed, fine, invalid, blank)] == [True, False, False, False]
    assert [is_tool_error(s.model_dump()) for s in (failed, fine, invalid, blank)] == [
        True,
        False,
        False,
        False,
    ]
    assert is_tool_error(
        {"call": {"name": "x", "arguments": {}}, "error": "boom"}
    )  # kind omitted: a tool step
    assert tool_error_count(Trajectory(steps=[failed, fine, invalid, failed])) == 2


def test_verified_is_the_label_where_there_is_one_else_the_score_at_the_threshold():
    assert is_verified(False, 0.99, 0.5) is False  # a label vetoes the verifier
    assert is_verified(True, 0.01, 0.5) is True
    assert is_verified(None, 0.5, 0.5) is True and is_verified(None, 0.49, 0.5) is False
    assert is_verified(None, None, None) is None


def test_export_and_demonstrations_call_the_same_trajectories_verified(tmp_store):
    from magv.demonstrations import verified_examples

    _verified_store(tmp_store)
    exported = tmp_store.runs_with_verdicts(tmp_store.scored_model_id(), verified_only=True)
    # the demonstrations' further conditions: the MCT of a question of the domain, with a tool call
    expected = {
        r["question_id"] for r in exported if r["is_mct"] and r["domain"] == "retail" and r["n_steps"]
    }
    assert {e.question_id for e in verified_examples(tmp_store, "retail")} == expected
    assert "q-gold" in expected and "q-veto" not in expected
