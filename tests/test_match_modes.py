"""Trajectory and argument match modes (magv/verify/labels.py).

The cases follow the documented semantics of a peer's trajectory match (langchain-ai/agentevals:
strict / unordered / subset / superset over tool calls; exact / ignore / subset / superset over
arguments; per-tool overrides), written here in magv's terms. Where magv decides otherwise on
purpose, the test says so and docs/verifier.md lists it.
"""

from __future__ import annotations

import json

import pytest

from magv.cli import main
from magv.domains.seeds import read_seeds
from magv.errors import BadInput
from magv.evaluate import score
from magv.models import Question, Run, ToolCall, ToolSpec, Trajectory
from magv.pipeline.generate import seed_questions
from magv.verify.importer import import_trajectories
from magv.verify.labels import (
    ArgRule,
    args_match,
    gold_labels,
    gold_trajectories,
    match,
    match_any,
    match_detail,
    parse_overrides,
    same_value,
)


def c(name: str, group: int | None = None, **arguments) -> ToolCall:
    return ToolCall(name=name, arguments=arguments, group=group)


WEATHER = c("get_weather", city="SF")
DIRECTIONS = c("get_directions", destination="Presidio")
FLIGHTS = c("find_flights", origin="SFO", to="JFK")


# -- trajectory modes (names and exact arguments) ------------------------------------------------

TRAJECTORY_CASES = [
    # (what, predicted, reference, mode, expected)
    (
        "strict: the same calls in the same order",
        [WEATHER, DIRECTIONS],
        [WEATHER, DIRECTIONS],
        "strict",
        True,
    ),
    ("strict: two sequential calls swapped", [DIRECTIONS, WEATHER], [WEATHER, DIRECTIONS], "strict", False),
    ("strict: one call too many", [WEATHER, DIRECTIONS], [WEATHER], "strict", False),
    ("strict: one call missing", [WEATHER], [WEATHER, DIRECTIONS], "strict", False),
    ("strict: another tool", [FLIGHTS], [WEATHER], "strict", False),
    ("strict: another argument value", [c("get_weather", city="NYC")], [WEATHER], "strict", False),
    ("strict: nothing called, nothing expected", [], [], "strict", True),
    (
        "unordered: the same calls in another order",
        [DIRECTIONS, WEATHER],
        [WEATHER, DIRECTIONS],
        "unordered",
        True,
    ),
    ("unordered: an extra call", [WEATHER, DIRECTIONS, FLIGHTS], [WEATHER, DIRECTIONS], "unordered", False),
    ("unordered: a call missing", [WEATHER], [WEATHER, DIRECTIONS], "unordered", False),
    ("unordered: a call repeated counts twice", [WEATHER, WEATHER], [WEATHER], "unordered", False),
    ("subset: fewer calls than the reference", [WEATHER], [WEATHER, DIRECTIONS], "subset", True),
    ("subset: the same calls", [DIRECTIONS, WEATHER], [WEATHER, DIRECTIONS], "subset", True),
    (
        "subset: a call the reference does not have",
        [WEATHER, FLIGHTS],
        [WEATHER, DIRECTIONS],
        "subset",
        False,
    ),
    ("subset: nothing called", [], [WEATHER], "subset", True),
    ("subset: a reference call used twice", [WEATHER, WEATHER], [WEATHER, DIRECTIONS], "subset", False),
    (
        "superset: extra calls around the reference",
        [FLIGHTS, WEATHER, DIRECTIONS],
        [WEATHER],
        "superset",
        True,
    ),
    ("superset: the same calls", [WEATHER, DIRECTIONS], [WEATHER, DIRECTIONS], "superset", True),
    ("superset: a reference call missing", [WEATHER, FLIGHTS], [WEATHER, DIRECTIONS], "superset", False),
    ("superset: nothing expected", [WEATHER], [], "superset", True),
    ("superset: one call cannot cover two", [WEATHER], [WEATHER, WEATHER], "superset", False),
]


@pytest.mark.parametrize(("predicted", "reference", "mode", "expected"),
                         [case[1:] for case in TRAJECTORY_CASES], ids=[case[0] for case in TRAJECTORY_CASES])  # fmt: skip
def test_trajectory_modes_with_exact_arguments(predicted, reference, mode, expected):
    assert match(predicted, reference, mode, arguments="exact") is expected


def test_names_only_ignores_argument_values_in_every_mode():
    other = [c("get_weather", city="NYC"), c("get_directions", destination="Mission")]
    for mode in ("strict", "unordered", "subset", "superset"):
        assert match(other, [WEATHER, DIRECTIONS], mode) is True
        assert match(other, [WEATHER, DIRECTIONS], mode, arguments="ignore") is True
        assert match(other, [WEATHER, DIRECTIONS], mode, arguments=True) is False


# -- parallel groups -----------------------------------------------------------------------------


def test_calls_of_one_parallel_group_are_unordered_under_strict():
    reference = [c("get_weather", 0, city="SF"), c("get_directions", 0, destination="Presidio")]
    swapped = [c("get_directions", 0, destination="Presidio"), c("get_weather", 0, city="SF")]
    assert match(swapped, reference, "strict", arguments=True) is True
    # Sequential calls keep their order: the same swap without groups is no strict match.
    assert match([DIRECTIONS, WEATHER], [WEATHER, DIRECTIONS], "strict", arguments=True) is False


def test_parallel_group_on_one_side_frees_its_calls_only():
    parallel = [c("get_directions", 0, destination="Presidio"), c("get_weather", 0, city="SF"), FLIGHTS]
    assert match(parallel, [WEATHER, DIRECTIONS, FLIGHTS], "strict", arguments=True) is True
    # The group does not reach past its own calls: FLIGHTS first is out of order.
    moved = [FLIGHTS, c("get_directions", 0, destination="Presidio"), c("get_weather", 0, city="SF")]
    assert match(moved, [WEATHER, DIRECTIONS, FLIGHTS], "strict", arguments=True) is False
    # Two groups in a row stay two blocks in order.
    two = [c("a", 0), c("b", 0), c("d", 1), c("e", 1)]
    assert match([c("b", 0), c("a", 0), c("e", 1), c("d", 1)], two, "strict") is True
    assert match([c("d", 0), c("e", 0), c("a", 1), c("b", 1)], two, "strict") is False


# -- argument modes --------------------------------------------------------------------------------

ARG_CASES = [
    # (what, predicted args, reference args, mode, expected)
    ("exact: equal", {"city": "SF"}, {"city": "SF"}, "exact", True),
    ("exact: another value", {"city": "NYC"}, {"city": "SF"}, "exact", False),
    ("exact: an extra key", {"city": "SF", "unit": "C"}, {"city": "SF"}, "exact", False),
    ("ignore: anything goes", {"city": "NYC", "x": 1}, {"city": "SF"}, "ignore", True),
    ("subset: fewer keys than the reference", {"city": "SF"}, {"city": "SF", "unit": "C"}, "subset", True),
    ("subset: a key the reference lacks", {"city": "SF", "unit": "C"}, {"city": "SF"}, "subset", False),
    ("subset: a shared key with another value", {"city": "LA"}, {"city": "SF", "unit": "C"}, "subset", False),
    ("superset: extra keys", {"city": "SF", "unit": "C"}, {"city": "SF"}, "superset", True),
    ("superset: a reference key missing", {"unit": "C"}, {"city": "SF", "unit": "C"}, "superset", False),
    ("superset: nested values compared whole", {"to": {"city": "SF", "zip": 1}}, {"to": {"city": "SF"}}, "superset",
     False),
]  # fmt: skip


@pytest.mark.parametrize(("predicted", "reference", "mode", "expected"),
                         [case[1:] for case in ARG_CASES], ids=[case[0] for case in ARG_CASES])  # fmt: skip
def test_argument_modes(predicted, reference, mode, expected):
    assert args_match(predicted, reference, ArgRule(mode=mode)) is expected
    # The same through a whole trajectory match, in every trajectory mode.
    for trajectory_mode in ("strict", "unordered", "subset", "superset"):
        got = match([ToolCall(name="f", arguments=predicted)], [ToolCall(name="f", arguments=reference)],
                    trajectory_mode, arguments=mode)  # fmt: skip
        assert got is expected


def test_numbers_are_equal_by_value_but_booleans_are_not_numbers():
    assert match([c("f", n=1)], [c("f", n=1.0)], arguments="exact") is True
    assert match([c("f", n=[1, {"x": 2}])], [c("f", n=[1.0, {"x": 2.0}])], arguments="exact") is True
    # Deliberate: JSON true is not the number 1 (Python's True == 1 would say it is).
    assert match([c("f", n=True)], [c("f", n=1)], arguments="exact") is False
    assert same_value(0, False) is False and same_value("1", 1) is False and same_value(None, None) is True


# -- per-tool overrides --------------------------------------------------------------------------


def test_override_a_mode_for_one_tool():
    predicted = [c("get_weather", city="San Francisco"), DIRECTIONS]
    reference = [WEATHER, DIRECTIONS]
    assert match(predicted, reference, arguments="exact") is False
    assert match(predicted, reference, arguments="exact", overrides={"get_weather": "ignore"}) is True
    # Other tools keep the default mode.
    wrong = [c("get_weather", city="X"), c("get_directions", destination="Y")]
    assert match(wrong, reference, arguments="exact", overrides={"get_weather": "ignore"}) is False


def test_override_a_list_of_keys_compares_only_those_including_nested_paths():
    predicted = [c("book", city="SF", at="10:02", who={"name": "Ana", "id": 7})]
    reference = [c("book", city="SF", at="10:00", who={"name": "Ana", "id": 8})]
    assert match(predicted, reference, arguments="exact") is False
    assert match(predicted, reference, arguments="exact", overrides={"book": ["city", "who.name"]}) is True
    assert match(predicted, reference, arguments="exact", overrides={"book": ["city", "who.id"]}) is False
    # A key missing on both sides is equal; missing on one side is not.
    assert match([c("book", city="SF")], [c("book", city="SF")], overrides={"book": ["note"]}) is True
    assert (
        match([c("book", city="SF")], [c("book", city="SF", note="x")], overrides={"book": ["note"]}) is False
    )


def test_override_keys_to_ignore_with_a_mode():
    predicted = [c("log", msg="hi", ts=1, extra=True)]
    reference = [c("log", msg="hi", ts=2)]
    rule = {"log": {"ignore": ["ts"]}}
    assert match(predicted, reference, arguments="exact", overrides=rule) is False  # extra is still compared
    assert (
        match(predicted, reference, arguments="exact", overrides={"log": {"ignore": ["ts", "extra"]}}) is True
    )
    assert match(predicted, reference, overrides={"log": {"mode": "superset", "ignore": ["ts"]}}) is True


def test_bad_overrides_and_modes_are_bad_input():
    with pytest.raises(BadInput, match="overrides.f: expected a mode"):
        parse_overrides({"f": 3})
    with pytest.raises(BadInput, match=r"overrides.f: unknown field 'mod'"):
        parse_overrides({"f": {"mod": "exact"}})
    with pytest.raises(BadInput, match="argument match mode 'fuzzy'"):
        parse_overrides({"f": "fuzzy"})
    with pytest.raises(BadInput, match="match mode 'loose'"):
        match([], [], "loose")


def test_pairing_is_optimal_not_greedy():
    """Deliberate: a first-fit pairing (the peer's) can use up the reference call another call
    needed; magv finds a one-to-one pairing whenever there is one."""
    predicted = [c("f", a=1, b=2), c("f", a=1)]
    reference = [c("f", a=1), c("f", a=1, b=2)]
    assert match(predicted, reference, "unordered", arguments="superset") is True
    assert match(predicted, reference, "superset", arguments="superset") is True


def test_argument_mode_reads_predicted_against_reference_in_every_trajectory_mode():
    """Deliberate: under trajectory subset the peer compares the reference's arguments against the
    output's; magv always reads the argument mode as predicted against reference."""
    predicted = [c("f", a=1)]
    reference = [c("f", a=1, b=2), c("g")]
    assert match(predicted, reference, "subset", arguments="subset") is True
    assert match(predicted, reference, "subset", arguments="superset") is False


# -- several acceptable trajectories: seeds, gold labels, eval -----------------------------------

TOOLS = {
    "get_order": ToolSpec(name="get_order", description="an order",
                          parameters={"type": "object", "properties": {"order_id": {"type": "integer"}}}),
    "find_customer": ToolSpec(name="find_customer", description="a customer",
                              parameters={"type": "object", "properties": {"order_id": {"type": "integer"}}}),
}  # fmt: skip
SEED = {
    "id": "status",
    "question": "Is order 4 on its way?",
    "trajectory": [{"name": "get_order", "arguments": {"order_id": 4}}],
    "acceptable": [[{"name": "find_customer", "arguments": {"order_id": 4}},
                    {"name": "get_order", "arguments": {"order_id": 4}}]],
}  # fmt: skip


def test_seed_lists_several_acceptable_trajectories_and_old_seeds_stay_valid(tmp_path):
    path = tmp_path / "seeds.jsonl"
    plain = {k: v for k, v in SEED.items() if k != "acceptable"}
    path.write_text(
        json.dumps(SEED) + "\n" + json.dumps({**plain, "id": "plain", "question": "Order 5?"}) + "\n"
    )
    seeds, _ = read_seeds(path, "shop", TOOLS)
    assert [len(s.golds()) for s in seeds] == [2, 1]
    assert seeds[0].acceptable[0][0].name == "find_customer"
    bad = {**SEED, "acceptable": [[{"name": "get_order", "arguments": {"order_id": "four"}}]]}
    path.write_text(json.dumps(bad) + "\n")
    with pytest.raises(
        BadInput, match=r"seeds.jsonl:1: acceptable\[1\]\[1\]: get_order: arguments do not match"
    ):
        read_seeds(path, "shop", TOOLS)
    path.write_text(json.dumps({**SEED, "acceptable": [[]]}) + "\n")
    with pytest.raises(BadInput, match=r"'acceptable\[1\]' must be a non-empty list"):
        read_seeds(path, "shop", TOOLS)


def test_gold_labels_accept_any_acceptable_trajectory(tmp_path, tmp_store):
    path = tmp_path / "seeds.jsonl"
    path.write_text(json.dumps(SEED) + "\n")
    seeds, _ = read_seeds(path, "shop", TOOLS)
    (q,) = seed_questions("shop", seeds)
    tmp_store.add_questions([q])
    stored = tmp_store.questions()[0]
    assert len(gold_trajectories(stored)) == 2
    with_lookup = Trajectory.from_calls([c("find_customer", order_id=4), c("get_order", order_id=4)])
    tmp_store.add_runs([Run(id="r0", question_id=q.id, run_index=0, trajectory=with_lookup)])
    from magv.mct import most_common_trajectory

    tmp_store.set_mct([most_common_trajectory(tmp_store.runs())])
    assert gold_labels(tmp_store, "strict", True) == 1
    assert tmp_store.labels()[0].correct is True
    # Against the main trajectory alone the lookup makes it wrong under strict.
    assert match(with_lookup.calls, seeds[0].trajectory, "strict", True) is False
    assert tmp_store.labels()[0].detail == match_detail("strict", True) == "gold:strict+arguments"


def test_eval_score_counts_an_acceptable_trajectory_and_uses_the_argument_mode():
    t = Trajectory.from_calls([c("find_customer", order_id=4), c("get_order", order_id=4.0)])
    main_only = score(t, [c("get_order", order_id=4)])
    assert main_only["strict"] is False and main_only["superset_args"] is True
    both = score(
        t, [c("get_order", order_id=4)], [[c("find_customer", order_id=4), c("get_order", order_id=4)]]
    )
    assert both["strict"] is True and both["strict_args"] is True
    loose = score(Trajectory.from_calls([c("get_order", order_id=4, note="x")]), [c("get_order", order_id=4)],
                  arguments="superset")  # fmt: skip
    assert loose["strict_args"] is True
    assert score(Trajectory.from_calls([c("get_order", order_id=5)]), [c("get_order", order_id=4)],
                 overrides={"get_order": "ignore"})["strict_args"] is True  # fmt: skip


def test_match_any_needs_one_match():
    assert match_any([WEATHER], [[DIRECTIONS], [WEATHER]], arguments=True) is True
    assert match_any([WEATHER], [[DIRECTIONS]], arguments=True) is False
    assert match_any([WEATHER], []) is False


# -- the import format: a reference per line ------------------------------------------------------


def _line(run: int, calls: list[tuple[str, dict]], reference: list | None, label=None) -> str:
    messages = [{"role": "user", "content": "Weather and route?"}]
    for i, (name, args) in enumerate(calls):
        messages += [
            {"role": "assistant", "content": None, "tool_calls": [
                {"id": f"c{i}", "type": "function", "function": {"name": name, "arguments": json.dumps(args)}}]},
            {"role": "tool", "tool_call_id": f"c{i}", "content": "{}"},
        ]  # fmt: skip
    messages.append({"role": "assistant", "content": "Here you are."})
    line = {
        "question_id": "w",
        "question": "Weather and route?",
        "run": run,
        "messages": messages,
        "label": label,
    }
    if reference is not None:
        line["reference"] = reference
    return json.dumps(line)


def test_import_reference_gives_the_label_under_the_chosen_modes(tmp_store, tmp_path):
    path = tmp_path / "ref.jsonl"
    reference_messages = [
        {"role": "assistant", "content": None, "tool_calls": [
            {"id": "r1", "type": "function", "function": {"name": "get_weather", "arguments": '{"city": "SF"}'}},
            {"id": "r2", "type": "function", "function": {"name": "get_directions",
                                                          "arguments": '{"destination": "Presidio"}'}}]},
    ]  # fmt: skip
    path.write_text("\n".join([
        _line(0, [("get_directions", {"destination": "Presidio"}), ("get_weather", {"city": "SF"})], reference_messages),
        _line(1, [("get_weather", {"city": "SF", "unit": "C"})], [{"name": "get_weather", "arguments": {"city": "SF"}}]),
        _line(2, [("get_weather", {"city": "NYC"})], [{"name": "get_weather", "arguments": {"city": "SF"}}], label=True),
    ]) + "\n")  # fmt: skip
    result = import_trajectories(tmp_store, path, match_mode="strict", arguments="superset")
    assert result.reference_labels == 2 and result.labels == 3
    by_run = {r.run_index: r.id for r in tmp_store.runs()}
    labels = {lb.run_id: lb for lb in tmp_store.labels()}
    # Run 0: the reference's two calls are one parallel group, so the other order is a strict match.
    assert labels[by_run[0]].correct is True
    assert labels[by_run[1]].correct is True and labels[by_run[1]].detail.startswith(
        "reference:strict+superset:"
    )
    assert labels[by_run[2]].correct is True and labels[by_run[2]].detail.startswith(
        "import:"
    )  # the line's own


def test_cli_import_takes_match_options(tmp_path, capsys):
    path = tmp_path / "ref.jsonl"
    path.write_text(_line(0, [("get_weather", {"city": "SF", "unit": "C"})],
                          [{"name": "get_weather", "arguments": {"city": "SF"}}]) + "\n")  # fmt: skip
    assert main(["import", "trajectories", str(path), "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["reference_labels"] == 1
    from magv.store import Store

    with Store(tmp_path / "data" / "magv.duckdb") as store:
        assert [lb.correct for lb in store.labels()] == [False]  # exact arguments by default
    assert main(["import", "trajectories", str(path), "--args-mode", "superset", "--replace", "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["replaced_runs"] == 1
    with Store(tmp_path / "data" / "magv.duckdb") as store:
        assert [lb.correct for lb in store.labels()] == [True]
    assert main(["import", "trajectories", str(path), "--mode", "loose"]) == 2


def test_gold_trajectories_read_the_acceptable_ones_from_question_meta():
    q = Question(id="q", domain="d", text="t", origin="seed", group_id="g", target=[WEATHER],
                 meta={"acceptable": [[DIRECTIONS.model_dump()]]})  # fmt: skip
    assert gold_trajectories(q) == [[WEATHER], [DIRECTIONS]]


def test_eval_questions_from_a_seed_file_carry_their_acceptable_trajectories(tmp_path):
    from types import SimpleNamespace

    from magv.evaluate import load_questions

    path = tmp_path / "held_out.jsonl"
    path.write_text(json.dumps(SEED) + "\n")
    (q,) = load_questions(SimpleNamespace(name="shop", tools=list(TOOLS.values())), path)
    assert [c.name for c in q.gold] == ["get_order"]
    assert [[c.name for c in t] for t in q.acceptable] == [["find_customer", "get_order"]]


def test_a_reference_of_bare_assistant_messages_passes_under_strict(tmp_store, tmp_path):
    path = tmp_path / "ref.jsonl"
    bare = [
        {
            "role": "assistant",
            "tool_calls": [{"function": {"name": "get_weather", "arguments": '{"city": "SF"}'}}],
        }
    ]
    path.write_text(_line(0, [("get_weather", {"city": "SF"})], bare) + "\n")
    result = import_trajectories(tmp_store, path, strict=True)
    assert result.reference_labels == 1 and result.normalised == {}
    assert [lb.correct for lb in tmp_store.labels()] == [True]


def test_cli_gold_labels_take_an_argument_mode_and_settings_overrides(tmp_path, capsys, monkeypatch):
    from magv.mct import most_common_trajectory
    from magv.store import Store

    seeds_file = tmp_path / "seeds.jsonl"
    seeds_file.write_text(json.dumps(SEED) + "\n")
    seeds, _ = read_seeds(seeds_file, "shop", TOOLS)
    (q,) = seed_questions("shop", seeds)
    with_note = Trajectory.from_calls([c("get_order", order_id=4, note="asap")])
    (tmp_path / "data").mkdir()
    with Store(tmp_path / "data" / "magv.duckdb") as store:
        store.add_questions([q])
        store.add_runs([Run(id="r0", question_id=q.id, run_index=0, trajectory=with_note)])
        store.set_mct([most_common_trajectory(store.runs())])
    answers = {}
    for args in (["--arguments"], ["--args-mode", "superset"], ["--args-mode", "subset"]):
        assert main(["verify", "label", *args, "--json"]) == 0
        answers[args[-1]] = json.loads(capsys.readouterr().out)["correct"]
    assert answers == {"--arguments": 0, "superset": 1, "subset": 0}
    monkeypatch.setenv("MAGV_VERIFY__GOLD_OVERRIDES", json.dumps({"get_order": ["order_id"]}))
    assert main(["verify", "label", "--arguments", "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["correct"] == 1
    assert main(["verify", "label", "--args-mode", "fuzzy"]) == 2


def test_the_match_modes_are_named_once():
    """Settings, the labeller, the report and the help texts take the names from magv.definitions."""
    import typing

    from magv.config import VerifySettings
    from magv.definitions import ARG_MODES, MATCH_MODES
    from magv.report import plots
    from magv.verify import labels

    assert typing.get_args(VerifySettings.model_fields["gold_match"].annotation) == MATCH_MODES
    arguments = typing.get_args(VerifySettings.model_fields["gold_arguments"].annotation)
    assert typing.get_args(arguments[1]) == ARG_MODES
    assert labels.MATCH_MODES is MATCH_MODES and plots.MATCH_MODES is MATCH_MODES
    with pytest.raises(Exception, match="gold_match"):
        VerifySettings(gold_match="fuzzy")


def test_label_help_lists_the_modes(capsys, monkeypatch):
    from magv.definitions import ARG_MODES, MATCH_MODES

    monkeypatch.setenv("COLUMNS", "300")  # one help text on one line
    assert main(["verify", "label", "--help"]) == 0
    out = " ".join(capsys.readouterr().out.split())
    assert " | ".join(MATCH_MODES) in out and " | ".join(ARG_MODES) in out
