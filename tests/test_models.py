import json

import duckdb

from magv.models import (
    Features,
    JudgeVerdict,
    Label,
    LLMCall,
    Prediction,
    Question,
    Run,
    Seed,
    Step,
    ToolCall,
    ToolSpec,
    Trajectory,
    make_id,
)


def _trajectory() -> Trajectory:
    return Trajectory(
        steps=[
            Step(
                call=ToolCall(name="find_customer", arguments={"email": "a@b.c"}),
                result={"id": 7},
                latency_s=0.01,
            ),
            Step(call=ToolCall(name="list_orders", arguments={"customer_id": 7}), error="timeout"),
            Step(kind="invalid", raw="{not json", error="reply is not JSON"),
        ],
        response="You have 2 orders.",
        status="ok",
    )


def test_every_model_round_trips_through_json():
    t = _trajectory()
    samples = [
        ToolSpec(name="find_customer", description="d", parameters={"type": "object"}, writes=False),
        ToolCall(name="x", arguments={"b": 1, "a": [1, 2]}),
        t,
        Seed(id="s1", question="q?", trajectory=t.calls, notes="n"),
        Question(id="q1", domain="retail", text="q?", origin="investigator", target=t.calls, group_id="s1"),
        Run(id="r1", question_id="q1", run_index=0, trajectory=t, prompt_tokens=3, completion_tokens=4),
        Label(run_id="r1", source="gold", correct=True),
        Features(run_id="r1", version="v1", values={"em_mean": 1.0}),
        Prediction(run_id="r1", model_id="m", probability=0.9, verdict=True, threshold=0.5),
        JudgeVerdict(run_id="r1", model="m", correct=None, reason="", error="unparsable"),
        LLMCall(id="c", key="k", role="responder", model="m", endpoint="http://x", request={"a": 1}),
    ]
    for obj in samples:
        again = type(obj).model_validate_json(obj.model_dump_json())
        assert again == obj


def test_trajectory_round_trips_through_duckdb(tmp_path):
    t = _trajectory()
    con = duckdb.connect(str(tmp_path / "t.duckdb"))
    con.execute("CREATE TABLE t (j JSON)")
    con.execute("INSERT INTO t VALUES (?)", [t.model_dump_json()])
    (raw,) = con.execute("SELECT j FROM t").fetchone()
    assert Trajectory.model_validate_json(raw) == t
    assert con.execute("SELECT json_array_length(j->'steps') FROM t").fetchone()[0] == 3


def test_signature_depends_on_calls_and_canonical_arguments():
    a = Trajectory.from_calls([ToolCall(name="f", arguments={"x": 1, "y": 2})])
    b = Trajectory.from_calls([ToolCall(name="f", arguments={"y": 2, "x": 1})], response="other text")
    c = Trajectory.from_calls([ToolCall(name="f", arguments={"x": 2, "y": 2})])
    assert a.signature() == b.signature()
    assert a.signature() != c.signature()
    # invalid steps and errors do not change which tools were called
    assert _trajectory().tool_names() == ["find_customer", "list_orders"]


def test_make_id_is_content_derived():
    assert make_id("a", {"x": 1, "y": 2}) == make_id("a", {"y": 2, "x": 1})
    assert make_id("a", 1) != make_id("a", 2)
    assert len(make_id("z")) == 16


def test_toolspec_openai_format():
    spec = ToolSpec(
        name="cancel", description="Cancel", parameters={"type": "object", "properties": {}}, writes=True
    )
    out = spec.openai()
    assert out["type"] == "function" and out["function"]["name"] == "cancel"
    assert "writes" not in json.dumps(out)


def test_parallel_groups_serialise_only_when_set_and_old_rows_still_load():
    old_row = '{"steps": [{"kind": "tool", "call": {"name": "f", "arguments": {"x": 1}}}], "status": "ok"}'
    t = Trajectory.model_validate_json(old_row)
    assert t.calls[0].group is None and "group" not in t.model_dump_json()
    grouped = Trajectory.from_calls(
        [
            ToolCall(name="a", group=0),
            ToolCall(name="b", group=0),
            ToolCall(name="c"),
            ToolCall(name="d", group=1),
        ]
    )
    assert json.loads(grouped.model_dump_json())["steps"][0]["call"]["group"] == 0
    assert Trajectory.model_validate_json(grouped.model_dump_json()) == grouped
    assert [[c.name for c in g] for g in grouped.call_groups()] == [["a", "b"], ["c"], ["d"]]
    # Groups say how calls were issued, not which calls: the signature is the same without them.
    assert grouped.signature() == Trajectory.from_calls([ToolCall(name=n) for n in "abcd"]).signature()


def test_canonical_calls_compare_numbers_by_value():
    assert ToolCall(name="f", arguments={"n": 1.0, "m": [2.0, 2.5]}).canonical() == 'f({"m":[2,2.5],"n":1})'
    assert (
        ToolCall(name="f", arguments={"n": True}).canonical()
        != ToolCall(name="f", arguments={"n": 1}).canonical()
    )


def test_seed_golds_and_question_meta():
    a, b = ToolCall(name="a"), ToolCall(name="b")
    seed = Seed(id="s", question="q", trajectory=[a], acceptable=[[b, a]], notes="n")
    assert seed.golds() == [[a], [b, a]]
    assert seed.question_meta() == {
        "notes": "n",
        "acceptable": [[{"name": "b", "arguments": {}}, {"name": "a", "arguments": {}}]],
    }
    assert Seed(id="s", question="q", trajectory=[a]).question_meta() == {}
