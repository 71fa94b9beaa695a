"""The report from a fixture store: sections, numbers known by construction, missing sections,
the comparison of two runs, and the command."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from magv.cli import main
from magv.definitions import best_model
from magv.report.compare import write_compare
from magv.report.html import write_report
from magv.report.metrics import collect, reason_kind
from magv.store import Store
from tests.report_fixtures import MODELS, build_report_store, populate

FIGURES = {"stage_seconds", "tokens_by_role", "per_target", "embedding_map", "steps", "tool_use", "mct_share",
           "cv_metrics", "confusion", "roc", "pr", "calibration", "importances", "scores", "verifier_vs_judge",
           "evaluation"}  # fmt: skip


@pytest.fixture(scope="module")
def fixture_store(tmp_path_factory):
    path = tmp_path_factory.mktemp("report") / "magv.duckdb"
    info = build_report_store(path)
    return path, info


@pytest.fixture(scope="module")
def rendered(fixture_store, tmp_path_factory):
    path, info = fixture_store
    out = tmp_path_factory.mktemp("out")
    with Store(path, read_only=True) as store:
        files = write_report(store, out)
    return files, json.loads(files.metrics.read_text()), files.html.read_text(), info


def _row(html: str, attr: str) -> str:
    match = re.search(rf"<tr[^>]*{re.escape(attr)}[^>]*>(.*?)</tr>", html, re.S)
    assert match, f"no table row with {attr}"
    return match.group(1)


def _cells(row_html: str) -> list[str]:
    return [re.sub(r"<[^>]+>", "", c).strip() for c in re.findall(r"<td[^>]*>(.*?)</td>", row_html, re.S)]


def test_report_has_every_section_and_figure(rendered):
    files, metrics, html, _ = rendered
    for section in ("summary", "generation", "responder", "verifier", "worst", "evaluation"):
        assert f'<section id="{section}">' in html
    assert set(metrics["figures"]) == FIGURES
    for name in FIGURES:
        assert re.search(
            rf'id="fig-{name}"><img src="data:image/svg\+xml;base64,[A-Za-z0-9+/=]{{500,}}"', html
        ), name
    assert metrics["missing"] == []
    # self-contained: nothing is fetched from anywhere
    assert not re.search(r'(src|href)="(https?:)?//', html)
    assert "<link" not in html and "@import" not in html and "url(" not in html


def test_cv_table_shows_every_model_with_its_values(rendered):
    _, metrics, html, info = rendered
    for name in MODELS:
        cells = _cells(_row(html, f'data-model="{name}"'))
        expected = [f"{info.cv[name][k]:.3f}" for k in ("accuracy", "precision", "recall", "f1", "roc_auc")]
        assert cells[1:6] == expected, name
        assert cells[6] == str(len(info.cv[name]["oof"]["y"]))
        stored = next(m for m in metrics["verifier"]["models"] if m["name"] == name)
        assert stored["confusion"] == info.cv[name]["confusion"]
        assert stored["f1"] == info.cv[name]["f1"]
    best = best_model(info.cv)
    assert 'class="best" data-model="' + best + '"' in html
    assert metrics["verifier"]["best"]["name"] == best


def test_generation_counts_per_target(rendered):
    _, metrics, html, info = rendered
    gen = metrics["generation"]
    by_seed = {t["seed_id"]: t for t in gen["targets"]}
    assert set(by_seed) == set(info.generated)
    for seed_id, n in info.generated.items():
        assert by_seed[seed_id]["generated"] == n
        assert by_seed[seed_id]["kept"] == info.kept.get(seed_id, 0)
        assert by_seed[seed_id]["dropped_by_reason"] == dict(info.dropped[seed_id])
    assert by_seed["return-delivered-0"]["failed_generations"] == 1
    total = _cells(
        re.findall(r"<tr>(.*?)</tr>", html.split('id="generation-table"')[1].split("</table>")[0], re.S)[-1]
    )
    assert total[1:4] == [str(sum(info.generated.values())), str(sum(info.kept.values())),
                          str(sum(sum(c.values()) for c in info.dropped.values()))]  # fmt: skip
    assert gen["clusters"] == len(info.generated)


def test_responder_and_summary_numbers(rendered):
    _, metrics, _, info = rendered
    r = metrics["responder"]
    assert r["base"]["runs"] == info.base_runs
    assert r["alternates"]["runs"] == info.runs - info.base_runs
    assert r["base"]["tool_calls"] + r["alternates"]["tool_calls"] == info.tool_calls
    assert r["base"]["tool_errors"] + r["alternates"]["tool_errors"] == info.tool_errors
    assert r["base"]["invalid_steps"] + r["alternates"]["invalid_steps"] == info.invalid_steps
    assert sum(t["calls"] for t in r["base"]["per_tool"]) == r["base"]["tool_calls"]
    assert r["mct"]["questions"] == len(info.mct_runs)
    s = metrics["summary"]
    assert s["domain"] == "retail" and s["pipeline_run"]["id"] == info.pipeline_run_id
    assert list(s["stages"]) == list(info.stages)  # pipeline order, not alphabetical
    assert s["stages"]["respond"]["seconds"] == info.stages["respond"]["seconds"]
    assert s["sizes"]["base_runs"] == info.base_runs
    assert s["failures"]["failed_generations"] == 1
    assert {m["role"] for m in s["models"]} == {"investigator", "responder", "reverse", "judge"}


def test_verifier_against_judge_accuracy_and_cost(rendered):
    _, metrics, html, info = rendered
    c = metrics["verifier"]["comparison"]
    n = len(info.judge)
    right = sum(
        1 for run, verdict in info.judge.items() if verdict is not None and verdict == info.labels[run]
    )
    assert c["judge"]["accuracy"] == round(right / n, 4)
    assert c["judge"]["unparsed"] == sum(v is None for v in info.judge.values())
    cost = c["cost_per_1000"]
    assert cost["judge"]["tokens_per_1000"] == round(info.judge_tokens / n * 1000, 3)
    assert cost["judge"]["seconds_per_1000"] == pytest.approx(info.judge_seconds / n * 1000, abs=1e-3)
    assert cost["verifier_scoring"]["seconds_per_1000"] == round(
        info.stages["score"]["seconds"] / n * 1000, 3
    )
    assert cost["verifier_scoring"]["tokens_per_1000"] == 0
    assert cost["verifier_with_alternates"]["tokens_per_1000"] > 0
    cells = _cells(_row(html, 'data-row="judge"'))
    assert cells[1] == f"{right / n:.3f}"
    assert float(cells[2].replace(",", "")) == pytest.approx(info.judge_tokens / n * 1000, abs=1e-3)
    assert cells[3] == "1,000"  # one judge call per verdict
    scoring = _cells(_row(html, 'data-row="verifier-scoring"'))
    assert scoring[3] == "0" and scoring[4] == "0.480"  # LLM calls, seconds
    # the verifier's own LLM calls: the reverse engineer's and the responder's on alternates
    alternates = cost["verifier_with_alternates"]
    assert alternates["calls_per_1000"] > 0 and alternates["alternate_run_calls"] > 0


def test_worst_cases_are_the_lowest_scores_and_readable(rendered):
    _, metrics, html, info = rendered
    worst = metrics["worst_cases"]
    expected = sorted(info.predictions, key=lambda r: (info.predictions[r], r))[: len(worst)]
    assert [w["run_id"] for w in worst] == expected
    assert len(worst) == 10
    first = worst[0]
    assert first["question"] and first["conversation"][0] == {"role": "customer", "text": first["question"]}
    assert first["conversation"][-1]["role"] == "answer"
    assert f'data-run="{first["run_id"]}"' in html
    assert first["question"].replace("'", "&#39;").replace('"', "&#34;") in html


def test_evaluation_section_from_eval_results(rendered):
    _, metrics, html, info = rendered
    configs = metrics["evaluation"]["configs"]
    assert [c["config"] for c in configs] == info.eval_configs
    assert set(configs[0]["rates"]) == {"strict", "unordered", "subset", "superset", "strict_args"}
    assert 'id="evaluation-table"' in html


def test_store_without_verifier_renders_the_rest(tmp_path):
    with Store(tmp_path / "m.duckdb") as store:
        info = populate(store, with_verifier=False, with_eval=False)
        files = write_report(store, tmp_path / "out")
    metrics = json.loads(files.metrics.read_text())
    html = files.html.read_text()
    assert metrics["generation"]["generated"] == sum(info.generated.values())
    assert metrics["responder"]["base"]["runs"] == info.base_runs
    assert any(m.startswith("verifier: no cross-validation") for m in metrics["missing"])
    assert any(m.startswith("worst cases:") for m in metrics["missing"])
    assert "Not available yet" in html and "magv verify train" in html
    assert '<section id="evaluation">' not in html
    assert {"roc", "cv_metrics", "evaluation"}.isdisjoint(metrics["figures"])
    assert {"embedding_map", "steps", "tool_use"} <= set(metrics["figures"])


def test_empty_store_renders(tmp_path):
    with Store(tmp_path / "empty.duckdb") as store:
        files = write_report(store, tmp_path / "out")
    metrics = json.loads(files.metrics.read_text())
    assert metrics["figures"] == []
    assert len(metrics["missing"]) >= 5
    assert "<h1>magv report" in files.html.read_text()


def test_curves_fall_back_to_predictions_without_out_of_fold(tmp_path):
    with Store(tmp_path / "m.duckdb") as store:
        info = populate(store, with_eval=False)
        # a later training that stored only the summary metrics
        store.add_cv_results("train-late", {name: {k: v for k, v in m.items() if k not in ("oof", "confusion")}
                                            for name, m in info.cv.items()})  # fmt: skip
        data = collect(store)
    assert data.metrics["verifier"]["training_id"] == "train-late"
    assert list(data.series["curves"]) == ["deployed model (in-sample)"]
    assert data.metrics["verifier"]["curves"]["deployed model (in-sample)"]["n"] == len(info.predictions)
    assert all(m["confusion"] is None for m in data.metrics["verifier"]["models"])


def test_compare_two_stores(tmp_path):
    a, b = tmp_path / "a.duckdb", tmp_path / "b.duckdb"
    build_report_store(a, seed=1, quality=0.5, pipeline_run_id="before")
    build_report_store(b, seed=2, quality=0.95, pipeline_run_id="after")
    files = write_compare(str(a), str(b), tmp_path / "unused.duckdb", tmp_path / "cmp")
    result = json.loads(files.metrics.read_text())
    assert result["labels"] == ["a:before", "b:after"]
    rows = {r["metric"]: r for r in result["headline"]}
    for side, key in ((result["a"], "a"), (result["b"], "b")):
        assert rows["responder runs"][key] == side["responder"]["base"]["runs"]
        assert rows["labelled correct (share)"][key] == side["verifier"]["labels"]["correct_share"]
    for r in result["headline"]:
        if r["delta"] is not None:
            assert r["delta"] == pytest.approx(r["b"] - r["a"], abs=1e-4)
    html = files.html.read_text()
    assert "a:before" in html and "b:after" in html and 'id="compare-table"' in html
    assert len(re.findall(r'<img src="data:image/svg\+xml', html)) == files.figures == 5


def test_compare_two_runs_in_one_store_by_time_window(tmp_path):
    db = tmp_path / "one.duckdb"
    with Store(db) as store:
        first = populate(store, pipeline_run_id="p1", seed=3, with_eval=False)
        second = populate(
            store, pipeline_run_id="p2", seed=4, quality=0.9, runs_per_question=2, with_eval=False
        )
    files = write_compare("p1", "p2", db, tmp_path / "cmp")
    result = json.loads(files.metrics.read_text())
    rows = {r["metric"]: r for r in result["headline"]}
    assert rows["responder runs"]["a"] == first.base_runs
    assert rows["responder runs"]["b"] == second.base_runs
    assert rows["questions generated"]["a"] == sum(first.generated.values())
    assert result["a"]["verifier"]["training_id"] == "train-p1"
    assert result["b"]["verifier"]["training_id"] == "train-p2"


def test_reason_kind_groups_selection_reasons():
    assert reason_kind("near-duplicate of 3f2a (cosine 0.971 >= 0.95)") == "near-duplicate"
    assert reason_kind("not nearest to the centre of cluster 12") == "not nearest to the centre"
    assert reason_kind("over the target count (its trajectory's quota is 0)") == "over the target count"
    assert reason_kind(None) == "unspecified"


def test_command_writes_report_and_ends_with_its_path(fixture_store, tmp_path, monkeypatch, capsys):
    path, _ = fixture_store
    monkeypatch.setenv("MAGV_DATABASE", str(path))
    assert main(["report", "--out", "rep", "--worst", "3"]) == 0
    out = capsys.readouterr().out.strip().splitlines()
    assert out[-1] == str(Path("rep") / "report.html")
    metrics = json.loads((tmp_path / "rep" / "metrics.json").read_text())
    assert len(metrics["worst_cases"]) == 3
    assert main(["report", "--out", "rep2", "--json"]) == 0
    printed = json.loads(capsys.readouterr().out)
    assert printed["figures"] == len(FIGURES) and Path(printed["report"]).is_file()
    assert main(["report", "--run", "no-such-run"]) == 2
    assert "no pipeline run 'no-such-run'" in capsys.readouterr().err
    assert main(["report", "--compare", "pipeline-a", str(path), "--out", "cmp"]) == 0
    assert capsys.readouterr().out.strip().splitlines()[-1] == str(Path("cmp") / "compare.html")


def test_samples_show_each_kept_question_with_its_mct_as_a_conversation(rendered):
    _, metrics, html, info = rendered
    samples = metrics["samples"]
    assert samples["kept"] == metrics["summary"]["sizes"]["kept_questions"]
    assert samples["shown"] == min(30, samples["kept"]) and samples["shown"] > 0
    mct_runs = set(info.mct_runs)
    for item in samples["items"]:
        assert item["run_id"] in mct_runs and item["is_mct"]
        turns = item["conversation"]
        assert turns[0] == {"role": "customer", "text": item["question"]}
        assert turns[-1] == {"role": "answer", "text": item["response"]}
        calls = [t for t in turns if t["role"] == "call"]
        # every call is followed by what came back: a result or the tool's error message
        for t in calls:
            following = turns[turns.index(t) + 1]
            assert following["step"] == t["step"] and following["role"] in ("result", "error")
        errors = [t["text"] for t in turns if t["role"] == "error"]
        assert [e["message"] for e in item["tool_errors"]] == errors
        assert f'data-question="{item["question_id"]}"' in html
    with_errors = [i for i in samples["items"] if i["tool_errors"]]
    assert with_errors, "the fixture's runs have tool errors"
    assert with_errors[0]["tool_errors"][0]["message"] in html
    scored = [i for i in samples["items"] if i["probability"] is not None]
    assert scored and all(len(i["contributions"]) == 5 for i in scored)


def test_counts_agree_across_sections(rendered):
    _, metrics, html, _ = rendered
    s, g, h = metrics["summary"], metrics["generation"], metrics["headline"]
    assert s["sizes"]["kept_questions"] == g["kept_total"] == h["questions kept"]
    assert g["kept_total"] == g["kept"] + g["seeds_kept"]
    assert h["failures"] == s["failures"]["total"]
    # two stages of the fixture recorded errors: both count, each with its messages in the page
    assert set(s["failures"]["failed_stages"]) == set(metrics["stage_errors"]) == {"generate", "judge"}
    assert s["failures"]["total"] == sum(s["failures"]["failed_stages"].values())
    for errors in metrics["stage_errors"].values():
        assert errors[0] in html
    assert f'<div class="v">{s["failures"]["total"]}</div><div class="k">failures in 2 stages' in html


def test_a_failed_train_stage_says_why_where_the_verifier_would_be(tmp_path):
    with Store(tmp_path / "m.duckdb") as store:
        populate(store, with_verifier=False, with_eval=False)
        run = store.pipeline_runs()[-1]
        stages = json.loads(run["stages"])
        why = "only one class in the labels (all 12 labelled correct)"
        stages["train"] = {
            "planned": 1,
            "done": 0,
            "failed": 1,
            "written": 0,
            "seconds": 0.1,
            "errors": [why],
        }
        store.finish_pipeline_run(run["id"], "failed", stages, json.loads(run["summary"]))
        files = write_report(store, tmp_path / "out")
    metrics = json.loads(files.metrics.read_text())
    assert metrics["stage_errors"]["train"] == [why]
    assert f"verifier: no cross-validation results: the train stage failed: {why}" in metrics["missing"]
    verifier_html = files.html.read_text().split('<section id="verifier">')[1].split("</section>")[0]
    assert why in verifier_html and "magv verify train" not in verifier_html
    assert 'id="judge-table"' not in verifier_html  # nothing measured: no table of dashes


def test_figures_show_only_what_has_data():
    from matplotlib.axis import XAxis

    from magv.report import plots

    fig = plots.tool_use([{"tool": "list_orders", "calls": 3, "errors": 3, "error_rate": 1.0}])
    ax = fig.axes[0]
    assert [t.get_text() for t in fig.legends[0].get_texts()] == ["tool error"]  # no "succeeded"
    assert all(float(t).is_integer() for t in ax.get_xticks())
    assert isinstance(ax.xaxis, XAxis)
    only_cost = {"verifier": {"cv_accuracy": None}, "judge": {"accuracy": None},
                 "cost_per_1000": {"verifier_scoring": {"tokens_per_1000": 0, "seconds_per_1000": 0.5},
                                   "verifier_with_alternates": None, "judge": None}}  # fmt: skip
    fig = plots.verifier_vs_judge(only_cost)
    titles = [a.get_title() for a in fig.axes]
    assert "Accuracy on labels" not in titles
    seconds = next(a for a in fig.axes if a.get_title() == "Seconds / 1,000")
    assert seconds.get_xscale() == "linear"  # one bar: no log axis
    fig = plots.embedding_map([(0.0, 0.0, 0, True, "Where is my order?"), (1.0, 1.0, 1, False, "Cancel it")])
    assert {t.get_text() for t in fig.axes[0].texts} == {"Where is my order?", "Cancel it"}


def test_compare_marks_regressions(tmp_path, capsys, monkeypatch):
    good, bad = tmp_path / "good.duckdb", tmp_path / "bad.duckdb"
    build_report_store(good, seed=1, quality=0.95, pipeline_run_id="before")
    build_report_store(bad, seed=1, quality=0.4, pipeline_run_id="after")
    files = write_compare(str(good), str(bad), tmp_path / "unused.duckdb", tmp_path / "cmp")
    result = json.loads(files.metrics.read_text())
    rows = {r["metric"]: r for r in result["headline"]}
    assert rows["labelled correct (share)"]["b"] < rows["labelled correct (share)"]["a"]
    assert rows["labelled correct (share)"]["change"] == "worse"
    assert "labelled correct (share)" in result["regressions"]
    assert all(rows[m]["change"] == "worse" for m in result["regressions"])
    assert rows["questions generated"]["change"] is None  # sizes have no better or worse
    html = files.html.read_text()
    assert 'id="regressions"' in html and "▼ worse" in html
    # the other way round the same numbers are improvements
    back = json.loads(
        write_compare(str(bad), str(good), tmp_path / "u.duckdb", tmp_path / "cmp2").metrics.read_text()
    )
    assert "labelled correct (share)" in back["improvements"]
    assert "labelled correct (share)" not in back["regressions"]
    monkeypatch.chdir(tmp_path)
    assert main(["report", "--compare", str(good), str(bad), "--out", "c3"]) == 0
    assert "regressions" in capsys.readouterr().out


def test_scoring_cost_is_per_prediction_written_not_per_batch(tmp_path):
    with Store(tmp_path / "m.duckdb") as store:
        info = populate(store, with_eval=False)
        run = store.pipeline_runs()[-1]
        stages = json.loads(run["stages"])
        n = stages["score"]["written"]
        stages["score"].update({"planned": 1, "done": 1, "seconds": 0.5})  # the real stage: one batch
        store.finish_pipeline_run(run["id"], "completed", stages, json.loads(run["summary"]))
        data = collect(store)
    scoring = data.metrics["verifier"]["comparison"]["cost_per_1000"]["verifier_scoring"]
    assert n == len(info.mct_runs) > 1
    assert scoring["measured_on"] == n
    assert scoring["seconds_per_1000"] == round(0.5 / n * 1000, 3)
