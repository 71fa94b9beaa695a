"""What a run will cost, and how many questions it generates, before it starts."""

from __future__ import annotations

from magv.config import Settings
from magv.pipeline.cost import Cost, parallel, run_costs, stage_cost
from magv.pipeline.generate import per_target
from magv.pipeline.respond import RespondItem


def _settings(**pipeline) -> Settings:
    return Settings(pipeline=pipeline)


def test_per_target_is_a_small_multiple_of_the_kept_count_spread_over_the_targets():
    assert per_target(_settings(questions=4), 22) == 1  # ceil(8 / 22)
    assert per_target(_settings(questions=20), 6) == 7  # ceil(40 / 6)
    assert per_target(_settings(questions=50), 4) == 10  # ceil(100 / 4) = 25, at most 10
    assert per_target(_settings(questions=6, generate_multiple=3), 4) == 5  # ceil(18 / 4)
    assert per_target(_settings(questions=50, questions_per_target=3), 4) == 3  # explicit wins
    assert per_target(_settings(questions=50, questions_per_target=40), 4) == 40  # even above the cap


def test_run_costs_count_every_agent_call_of_a_new_run():
    s = _settings(questions=4, runs=3, alternates=2, alternate_runs=1, max_steps=4)
    costs = {c.stage: c for c in run_costs(s, targets=2)}
    # 2 targets x ceil(8/2)=4 questions; 4 kept + 2 seeds = 6 base questions
    assert costs["generate"].calls == 2
    assert costs["respond"].items == 6 * 3 and costs["respond"].calls == 6 * 3 * 5
    assert costs["reverse"].calls == 6
    assert costs["respond_alternates"].items == 12 and costs["respond_alternates"].calls == 12 * 5


def test_a_stage_cost_says_its_time_only_from_measured_latencies():
    s = _settings(max_steps=2)
    items = [RespondItem(question=None, run_indices=[0, 1, 2]), RespondItem(question=None, run_indices=[1])]
    cost = stage_cost("respond", items, s)
    assert (cost.role, cost.items, cost.calls) == ("responder", 4, 12)
    assert cost.describe({}, 4) == "respond: 4 runs, up to 12 responder LLM calls"
    assert cost.describe({"responder": 2.0}, 4).endswith("about 6 s (2.00 s a call, 4 in flight)")
    assert (
        Cost("x", "judge", 3000, 3000, "trajectories").describe({"judge": 3.0}, 1).split(", ")[2]
        == "about 2.5 h (3.00 s a call"
    )


def test_calls_in_flight_are_bounded_by_the_endpoints():
    s = Settings(pipeline={"concurrency": 8}, llm={"concurrency_per_endpoint": 2})
    assert parallel(s, 1) == 2 and parallel(s, 3) == 6 and parallel(s, 10) == 8


def test_the_pre_flight_opens_the_store_once_and_reads_the_latencies_then(tmp_path, monkeypatch):
    """`magv run` checks the lock and reads the call log's latencies for its plan in one opening."""
    from magv.commands import pipeline as command
    from magv.models import LLMCall
    from magv.store import Store

    db = tmp_path / "magv.duckdb"
    with Store(db) as store:
        store.add_llm_calls([LLMCall(id=f"c{i}", key=f"c{i}", role="responder", model="m", endpoint="e",
                                     request={}, latency_s=1.0 + i) for i in range(2)])  # fmt: skip
    opened = []
    real_init = Store.__init__

    def counting_init(self, *args, **kwargs):
        opened.append(args)
        real_init(self, *args, **kwargs)

    monkeypatch.setattr(Store, "__init__", counting_init)
    assert command._open_lock(Settings(database=db), wait=False) == {"responder": 1.5}
    assert len(opened) == 1
