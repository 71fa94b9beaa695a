"""The evaluation harness: scoring, the paired bootstrap on known data, demonstrations in the
prompt without leakage (fake server, real HTTP), `magv eval` and its input errors, and a slow run
of `magv eval --compare` on the embedded model over the retail seeds."""

from __future__ import annotations

import json
import math
import os
from pathlib import Path

import numpy as np
import pytest

from magv.cli import main
from magv.config import Settings
from magv.demonstrations import DemonstrationIndex, seed_examples
from magv.domains import load_domain
from magv.errors import BadInput
from magv.evaluate import (
    EvalQuestion,
    configure,
    load_questions,
    paired_bootstrap,
    parse_spec,
    run_evaluation,
    score,
)
from magv.gguf.registry import DEFAULT_MODEL
from magv.models import Step, ToolCall, Trajectory
from magv.store import Store
from magv.verify.labels import match
from tests.fake_agents import AgentScript
from tests.fakellm import FakeLLMServer
from tests.llm_fixtures import llama_server  # noqa: F401
from tests.test_demonstrations import demo_questions
from tests.verify_helpers import HashEmbedder

A, B, C = (ToolCall(name=n, arguments={"id": 1}) for n in ("a", "b", "c"))


# -- scoring and statistics ----------------------------------------------------------------------


def test_score_under_each_match_mode():
    t = Trajectory(steps=[Step(call=B), Step(call=A), Step(call=ToolCall(name="c", arguments={"id": 2}))],
                   response="ok")  # fmt: skip
    s = score(t, [A, B, C])
    assert (s["strict"], s["unordered"], s["subset"], s["superset"]) == (False, True, True, True)
    assert (s["strict_args"], s["unordered_args"], s["subset_args"], s["superset_args"]) == (False,) * 4
    assert s["steps"] == 3 and s["tool_calls"] == 3 and s["answered"] and s["valid_calls"] == 1.0
    bad = Trajectory(steps=[Step(call=A), Step(kind="invalid", raw="{", error="not JSON"),
                            Step(call=C, error="unknown_tool: no such tool"),
                            Step(call=B, error="tool_error: order not found")], status="max_steps")  # fmt: skip
    s = score(bad, [A, B])
    assert s["valid_calls"] == 0.5  # a tool's own error is still a valid call; the rest are not
    assert not s["answered"] and s["superset"] and not s["subset"]
    assert score(Trajectory(response="hi"), [A])["valid_calls"] is None


def test_paired_bootstrap_on_known_data():
    rng = np.random.default_rng(1)
    a = rng.normal(size=50)
    same = paired_bootstrap(a, a)
    assert same == {"diff": 0.0, "low": 0.0, "high": 0.0, "n": 50}
    shifted = paired_bootstrap(a, a + 1.0)  # every pair differs by exactly 1
    assert shifted["diff"] == pytest.approx(1.0) and shifted["low"] == pytest.approx(1.0)
    assert shifted["high"] == pytest.approx(1.0)
    # 30 of 100 questions fixed, none broken: difference 0.3, interval about ±1.96·sqrt(.3·.7/100)
    before, after = [0] * 100, [1] * 30 + [0] * 70
    ci = paired_bootstrap(before, after, n_resamples=4000, seed=7)
    half = 1.96 * math.sqrt(0.3 * 0.7 / 100)
    assert ci["diff"] == 0.3 and ci["n"] == 100
    assert ci["low"] == pytest.approx(0.3 - half, abs=0.025) and ci["high"] == pytest.approx(
        0.3 + half, abs=0.025
    )
    assert paired_bootstrap(before, after, n_resamples=4000, seed=7) == ci  # seeded: reproducible
    # unpaired items (one side missing) are left out
    partial = paired_bootstrap([1, None, 0, 1], [1, 1, None, 0])
    assert partial["n"] == 2 and partial["diff"] == -0.5
    assert paired_bootstrap([None], [1])["diff"] is None


def test_compare_spec_is_checked():
    assert parse_spec("demos=3, model=qwen,endpoint=http://a/v1,endpoint=http://b/v1") == [
        ("demos", "3"), ("model", "qwen"), ("endpoint", "http://a/v1"), ("endpoint", "http://b/v1")]  # fmt: skip
    cfg = configure(
        Settings(), "B", overrides=parse_spec("demos=3,model=qwen,endpoint=http://a/v1,temperature=0")
    )
    role = cfg.settings.llm.role("responder")
    assert cfg.demos == 3 and role["model"] == "qwen" and role["endpoints"] == ["http://a/v1"]
    assert role["temperature"] == 0 and cfg.settings.llm.role("judge")["model"] == DEFAULT_MODEL
    for spec, words in [("demos", "KEY=VALUE"), ("colour=red", "unknown key"), ("demos=x", "integer"),
                        ("demos=99", "pipeline.demos"), ("seed_demos=maybe", "true or false"),
                        ("prompts=/nowhere", "responder.j2")]:  # fmt: skip
        with pytest.raises(BadInput, match=words):
            configure(Settings(), "B", overrides=parse_spec(spec))


# -- the harness on the fake server ---------------------------------------------------------------


def _marked(seeds) -> list[EvalQuestion]:
    """Seed questions carrying the scripted responder's marker, so it follows their gold calls."""
    return [EvalQuestion(id=f"q-{s.id}", seed_id=s.id, group_id=s.id, text=f"{s.question} [{s.id}]",
                         gold=list(s.trajectory)) for s in seeds]  # fmt: skip


def _settings(tmp_path: Path, url: str, **pipeline) -> Settings:
    return Settings(database=tmp_path / "magv.duckdb", domain_data_dir=tmp_path / "domains",
                    llm={"endpoints": [url]}, pipeline=pipeline)  # fmt: skip


def test_demos_reach_the_prompt_and_never_come_from_the_question_group(tmp_path: Path):
    domain = load_domain("retail")
    seeds = domain.seeds()
    questions = _marked(seeds)
    group_of = {s.question: s.id for s in seeds}
    # The leakage is real with this embedder: most questions' nearest seed is their own.
    control = DemonstrationIndex(seed_examples(seeds), HashEmbedder())
    own_first = sum(control.nearest(q.text, 1)[0].group_id == q.group_id for q in questions)
    assert own_first >= len(questions) // 2
    with FakeLLMServer(AgentScript("retail", wrong_question_rate=0, wrong_run_rate=0)) as srv, \
            Store(tmp_path / "magv.duckdb") as store:  # fmt: skip
        base = _settings(tmp_path, srv.base_url, max_steps=6)
        configs = [configure(base, "demos=0"), configure(base, "demos=3", seed_demos=True,
                                                         overrides=[("demos", "3")])]  # fmt: skip
        report = run_evaluation(store, domain, questions, configs, embedder=HashEmbedder(), n_resamples=500)
        rows = store.query(
            "SELECT config, question_id, results FROM eval_results WHERE eval_id=?", [report.eval_id]
        )
    text_of = {q.text: q for q in questions}
    with_demos = 0
    for body in srv.requests:
        question = text_of[body["messages"][1]["content"]]
        shown = demo_questions(body["messages"][0]["content"])
        if shown:
            with_demos += 1
            assert len(shown) == 3
            assert question.group_id not in {group_of[t] for t in shown}
    assert with_demos > len(questions)  # every question of config B, over its steps
    assert len(rows) == 2 * len(questions)
    for r in rows:
        res = json.loads(r["results"])
        assert len(res["demos"]) == (3 if r["config"] == "demos=3" else 0)
        assert f"seed:{res['group_id']}" not in res["demos"]
    # the script follows the gold trajectory: everything matches, under every mode, in both
    for c in report.configs:
        s = c["summary"]
        assert s["questions"] == len(questions) and s["strict_args"] == 1.0 and s["superset"] == 1.0
        assert s["valid_calls"] == 1.0 and s["answered"] == 1.0
        assert s["steps"] == pytest.approx(np.mean([len(q.gold) for q in questions]), abs=1e-4)
    assert report.comparison["strict"] == {"diff": 0.0, "low": 0.0, "high": 0.0, "n": len(questions)}
    assert report.comparison["tokens"]["diff"] > 0  # demonstrations make the prompt longer


def test_wrong_trajectories_score_what_the_script_did(tmp_path: Path):
    """Every question goes wrong (one call short, or another tool at the end); the accuracies are
    those of the calls the script planned, question by question."""
    domain = load_domain("retail")
    questions = _marked(domain.seeds())
    script = AgentScript("retail", wrong_question_rate=1.0, wrong_run_rate=0)
    with FakeLLMServer(script) as srv, Store(tmp_path / "magv.duckdb") as store:
        report = run_evaluation(store, domain, questions, [configure(_settings(tmp_path, srv.base_url), "x")])
    planned = {q.id: [ToolCall(name=n, arguments=a) for n, a in script._plan(script.seeds[q.seed_id], q.text, 0)]
               for q in questions}  # fmt: skip
    s = report.configs[0]["summary"]
    for mode in ("strict", "unordered", "subset", "superset"):
        for arguments in (False, True):
            expected = np.mean([match(planned[q.id], q.gold, mode, arguments) for q in questions])
            assert s[f"{mode}_args" if arguments else mode] == pytest.approx(expected, abs=1e-4), (
                mode,
                arguments,
            )
    assert s["strict"] == s["superset"] == 0.0 and 0.0 < s["subset"] < 1.0
    assert s["valid_calls"] == 1.0 and s["answered"] == 1.0
    assert s["tool_calls"] == pytest.approx(np.mean([len(c) for c in planned.values()]), abs=1e-4)
    assert report.comparison is None


def test_configurations_on_two_endpoints_never_replay_each_other(tmp_path: Path):
    """Same model name, same messages, other endpoint: B's calls must reach B's server."""
    domain = load_domain("retail")
    questions = _marked(domain.seeds()[:4])
    script = AgentScript("retail", wrong_question_rate=0, wrong_run_rate=0)
    with FakeLLMServer(script) as one, FakeLLMServer(script) as two, Store(tmp_path / "magv.duckdb") as store:
        base = _settings(tmp_path, one.base_url)
        configs = [configure(base, "one"), configure(base, "two", overrides=[("endpoint", two.base_url)])]
        report = run_evaluation(store, domain, questions, configs)
    assert one.counts["chat"] == two.counts["chat"] == sum(len(q.gold) + 1 for q in questions)
    assert report.comparison["strict_args"]["diff"] == 0.0


def test_a_prompt_folder_changes_only_its_configuration(tmp_path: Path):
    folder = tmp_path / "prompts-b"
    folder.mkdir()
    original = (Path(__file__).resolve().parent.parent / "prompts" / "responder.j2").read_text()
    (folder / "responder.j2").write_text("PROMPT VARIANT B\n" + original)
    domain = load_domain("retail")
    questions = _marked(domain.seeds()[:3])
    with FakeLLMServer(AgentScript("retail")) as srv, Store(tmp_path / "magv.duckdb") as store:
        base = _settings(tmp_path, srv.base_url, max_steps=1)
        configs = [configure(base, "a"), configure(base, "b", overrides=parse_spec(f"prompts={folder}"))]
        run_evaluation(store, domain, questions, configs)
    variant = [b["messages"][0]["content"].startswith("PROMPT VARIANT B") for b in srv.requests]
    assert variant == [False] * 3 + [True] * 3  # A's runs first, then B's
    assert "MAGV_PROMPTS_DIR" not in os.environ


def _write_questions(path: Path, seeds, n: int) -> None:
    lines = [json.dumps({"id": s.id, "question": f"{s.question} [{s.id}]",
                         "trajectory": [c.model_dump() for c in s.trajectory]}) for s in seeds[:n]]  # fmt: skip
    path.write_text("\n".join(lines) + "\n")


def test_magv_eval_compare_prints_both_and_stores_results(tmp_path: Path, monkeypatch, capsys):
    seeds = load_domain("retail").seeds()
    _write_questions(tmp_path / "held_out.jsonl", seeds, 6)
    with FakeLLMServer(AgentScript("retail", wrong_question_rate=0.5, wrong_run_rate=0)) as srv:
        for key, value in {
            "MAGV_LLM__ENDPOINTS": json.dumps([srv.base_url]),
            "MAGV_EMBEDDINGS__BACKEND": "endpoint",
            "MAGV_EMBEDDINGS__ENDPOINT": srv.base_url,
        }.items():
            monkeypatch.setenv(key, value)  # fmt: skip
        code = main(["eval", "--questions", str(tmp_path / "held_out.jsonl"), "--seed-demos",
                     "--compare", "demos=2", "--json"])  # fmt: skip
        out = json.loads(capsys.readouterr().out)
        assert code == 0
        assert [c["name"] for c in out["configs"]] == ["demos=0,seed_demos", "demos=2"]
        assert out["configs"][1]["summary"]["demos_shown"] == 2.0
        assert {"strict", "superset_args", "valid_calls", "tokens", "latency_s"} <= set(out["comparison"])
        # the table: both configurations, the difference and its interval
        assert (
            main(
                [
                    "eval",
                    "--questions",
                    str(tmp_path / "held_out.jsonl"),
                    "--compare",
                    "demos=1,seed_demos=true",
                ]
            )
            == 0
        )
    text = capsys.readouterr().out
    for word in ("demos=0", "demos=1,seed_demos=true", "B − A", "95% CI", "strict_args", "valid_calls"):
        assert word in text
    with Store(tmp_path / "data" / "magv.duckdb", read_only=True) as store:
        assert store.scalar("SELECT count(*) FROM eval_results") == 4 * 6


def test_bad_question_file_is_exit_2_naming_the_line(tmp_path: Path, capsys):
    seeds = load_domain("retail").seeds()
    path = tmp_path / "held_out.jsonl"
    _write_questions(path, seeds, 3)
    with path.open("a") as f:
        f.write('{"question": "Where is my order?", "trajectory": [{"name": "teleport", "arguments": {}}]}\n')
    assert main(["eval", "--questions", str(path)]) == 2
    err = capsys.readouterr().err
    assert f"{path}:4" in err and "unknown tool 'teleport'" in err
    path.write_text(path.read_text().splitlines()[0] + "\n" + path.read_text().splitlines()[0]
                    .replace('"id": "', '"id": "copy-') + "\n")  # fmt: skip
    assert main(["eval", "--questions", str(path)]) == 2
    assert f"{path}:2: same question as line 1" in capsys.readouterr().err
    assert main(["eval", "--questions", str(tmp_path / "missing.jsonl")]) == 2
    assert main(["eval", "--compare", "demos"]) == 2
    assert "KEY=VALUE" in capsys.readouterr().err
    assert not (tmp_path / "data").exists()  # nothing written, no database created


def test_load_questions_from_seeds_keep_the_pipeline_ids():
    domain = load_domain("retail")
    from magv.pipeline.generate import seed_questions

    questions = load_questions(domain, "seeds")
    pipeline = seed_questions(domain.name, domain.seeds())
    assert [q.id for q in questions] == [q.id for q in pipeline]
    assert [q.group_id for q in questions] == [q.group_id for q in pipeline]


# -- the embedded model --------------------------------------------------------------------------


@pytest.mark.slow
@pytest.mark.timeout(1800)  # ~5 s a call on two idle cores, three times that when they are shared
def test_eval_compare_on_the_embedded_model_over_the_retail_seeds(
    llama_server,  # noqa: F811
    tmp_path,
    monkeypatch,
    capsys,
):
    """Leave-one-seed-out: each seed is answered with 3 demonstrations from the other seeds (B)
    or none (A). One step and few tokens per question keep it to 44 model calls."""
    for key, value in {
        "MAGV_LLM__ENDPOINTS": json.dumps([llama_server.url]),
        "MAGV_LLM__MAX_TOKENS": "64",
        "MAGV_LLM__TIMEOUT_S": "300",
        "MAGV_PIPELINE__CONCURRENCY": "1",
    }.items():
        monkeypatch.setenv(key, value)  # fmt: skip
    code = main(["eval", "--domain", "retail", "--questions", "seeds", "--max-steps", "1", "--temperature", "0",
                 "--seed-demos", "--compare", "demos=3"])  # fmt: skip
    text = capsys.readouterr().out
    with capsys.disabled():
        print("\n" + text)
    assert code == 0
    assert "demos=0,seed_demos" in text and "demos=3" in text and "95% CI" in text
    with Store(tmp_path / "data" / "magv.duckdb", read_only=True) as store:
        rows = store.query("SELECT config, results FROM eval_results")
        n_seeds = len(load_domain("retail").seeds())
        assert len(rows) == 2 * n_seeds
        for r in rows:
            res = json.loads(r["results"])
            assert len(res["demos"]) == (3 if r["config"] == "demos=3" else 0)
            assert f"seed:{res['seed_id']}" not in res["demos"]  # a seed is never its own demonstration
        assert store.scalar("SELECT count(*) FROM llm_calls WHERE error IS NULL") > 0
