import random

import pytest

from magv.agents.investigator import pick_example
from magv.agents.parsing import parse_questions
from magv.mct import most_common_trajectory
from magv.models import Run, Seed, Step, ToolCall, Trajectory


def test_parse_questions_drops_empty_and_duplicate_lines():
    text = '{"questions": ["Where is my order?", "  where is   my order? ", "", "ok", 3, "Cancel order 5"]}'
    assert parse_questions(text, 10) == ["Where is my order?", "Cancel order 5"]
    assert parse_questions(text, 1) == ["Where is my order?"]


@pytest.mark.parametrize("text", ["", "not json", '{"other": 1}', '{"questions": ["", "a"]}'])
def test_parse_questions_explains_failures(text):
    with pytest.raises(ValueError):
        parse_questions(text, 3)


def _run(i, calls, status="ok"):
    t = Trajectory.from_calls([ToolCall(name=n, arguments=a) for n, a in calls])
    t.status = status
    return Run(id=f"r{i}", question_id="q", run_index=i, trajectory=t)


def test_mct_is_the_most_common_signature():
    runs = [
        _run(0, [("a", {"x": 1})]),
        _run(1, [("a", {"x": 1}), ("b", {})]),
        _run(2, [("a", {"x": 1}), ("b", {})]),
    ]
    mct = most_common_trajectory(runs)
    assert mct["run_id"] == "r1" and mct["share"] == pytest.approx(2 / 3) and mct["n_distinct"] == 2


def test_mct_ignores_llm_failures_and_ties_go_by_content_not_by_order():
    runs = [_run(0, [], status="llm_error"), _run(1, [("b", {})]), _run(2, [("a", {})])]
    mct = most_common_trajectory(runs)
    smaller = min(runs[1].trajectory.signature(), runs[2].trajectory.signature())
    assert mct["signature"] == smaller and mct["n_runs"] == 3 and mct["n_distinct"] == 2
    assert most_common_trajectory(list(reversed(runs))) == mct
    assert most_common_trajectory([_run(0, [], status="llm_error")]) is None
    # of the runs with the MCT's signature, the lowest run index stands for it
    again = [_run(3, [("a", {})]), _run(1, [("a", {})]), _run(2, [("b", {})])]
    assert most_common_trajectory(again)["run_id"] == "r1"


def test_example_seed_has_a_different_trajectory():
    same = [ToolCall(name="a")]
    seeds = [
        Seed(id="s1", question="q1", trajectory=same),
        Seed(id="s2", question="q2", trajectory=same),
        Seed(id="s3", question="q3", trajectory=[ToolCall(name="b")]),
    ]
    for i in range(10):
        assert pick_example(seeds[0], seeds, random.Random(i)).id == "s3"


def test_invalid_steps_do_not_count_as_calls():
    t = Trajectory(steps=[Step(kind="invalid", raw="x", error="bad"), Step(call=ToolCall(name="a"))])
    assert t.tool_names() == ["a"]


def test_raw_newlines_inside_strings_are_accepted():
    # gemma-3-270m under a JSON grammar writes control characters inside strings
    assert parse_questions('{"questions": ["Where is\nmy order?"]}', 3) == ["Where is my order?"]
