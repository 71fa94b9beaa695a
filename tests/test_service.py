"""Scoring in production: `magv serve verifier` over real HTTP and `magv verify score --input`."""

from __future__ import annotations

import io
import json
import os
import random
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

from magv.cli import main
from magv.config import load_settings
from magv.service.app import create_app, score_entries
from magv.service.log import TrajectoryLog
from magv.service.payload import parse_request
from magv.store import Store
from magv.verify import FEATURE_NAMES
from magv.verify.scoring import load_scorer
from tests.fakellm import FakeLLMServer
from tests.service_helpers import ServedApp, example, import_lines, messages, train_model
from tests.verify_helpers import HashEmbedder


@pytest.fixture(scope="module")
def model_file(tmp_path_factory) -> Path:
    return train_model(tmp_path_factory.mktemp("model") / "verifier.skops")


@pytest.fixture(scope="module")
def scorer(model_file):
    return load_scorer(load_settings(), model_file=model_file, embedder=HashEmbedder())


@pytest.fixture
def embeddings(monkeypatch):
    """The settings' embedder pointed at the fake server (no sentence model loaded)."""
    with FakeLLMServer() as srv:
        env = {"MAGV_EMBEDDINGS__BACKEND": "endpoint", "MAGV_EMBEDDINGS__ENDPOINT": srv.base_url}
        for k, v in env.items():
            monkeypatch.setenv(k, v)
        yield env


def _batch(n: int, seed: int = 5) -> tuple[dict, list[bool]]:
    rng = random.Random(seed)
    items, truth = [], []
    for i in range(n):
        good = i % 2 == 0
        _, runs = example(rng, 500 + i, good)
        items.append({"id": f"t{i}", "messages": runs[0], "siblings": runs[1:]})
        truth.append(good)
    return {"trajectories": items}, truth


def test_a_batch_is_answered_over_http_as_in_process(scorer):
    body, truth = _batch(6)
    with ServedApp(create_app(scorer)) as srv:
        r = httpx.post(f"{srv.url}/v1/verify", json=body, timeout=30)
    assert r.status_code == 200, r.text
    out = r.json()
    assert out["model"] == "test-model"
    results = out["results"]
    assert [x["id"] for x in results] == [f"t{i}" for i in range(6)]
    assert [x["verdict"] == "correct" for x in results] == truth
    for x in results:
        assert 0 <= x["probability"] <= 1 and x["threshold"] == 0.5
        assert len(x["reasons"]) == 5 and all(reason["feature"] in FEATURE_NAMES for reason in x["reasons"])
        magnitudes = [abs(reason["contribution"]) for reason in x["reasons"]]
        assert magnitudes == sorted(magnitudes, reverse=True)
    # The same scoring path in-process gives the same probabilities.
    entries, _ = parse_request(json.dumps(body).encode(), 100)
    assert [v.probability for v in score_entries(scorer, entries)] == [x["probability"] for x in results]


def test_one_trajectory_gets_its_verdict_and_siblings_change_it(scorer):
    good = messages("where is my order 7?", ["find_customer", "get_order"])
    scattered = [
        messages("where is my order 7?", names) for names in (["refund"], ["cancel_order", "get_product"])
    ]
    with ServedApp(create_app(scorer)) as srv:
        alone = httpx.post(f"{srv.url}/v1/verify", json={"messages": good}, timeout=30).json()
        agreed = httpx.post(f"{srv.url}/v1/verify", json={"messages": good, "siblings": [good, good]}).json()
        split = httpx.post(f"{srv.url}/v1/verify", json={"messages": good, "siblings": scattered}).json()
    assert {"verdict", "probability", "reasons", "threshold"} <= set(alone) and alone["id"] is None
    assert agreed["verdict"] == "correct"
    assert split["probability"] < agreed["probability"]


def test_health_and_openapi(scorer):
    with ServedApp(create_app(scorer)) as srv:
        health = httpx.get(f"{srv.url}/health")
        schema = httpx.get(f"{srv.url}/openapi.json").json()
        missing = httpx.get(f"{srv.url}/nothing")
    assert health.status_code == 200
    assert health.json()["status"] == "ok" and health.json()["model"]["id"] == "test-model"
    assert schema["openapi"].startswith("3.1")
    assert set(schema["paths"]) == {"/v1/verify", "/health", "/openapi.json"}
    assert {"400", "413", "422"} <= set(schema["paths"]["/v1/verify"]["post"]["responses"])
    assert missing.status_code == 404 and "error" in missing.json()


def test_a_body_over_the_limit_is_refused_with_413(scorer):
    body, _ = _batch(4)
    raw = json.dumps(body).encode()
    assert len(raw) > 2000
    with ServedApp(create_app(scorer, max_body=2000, max_trajectories=3)) as srv:
        declared = httpx.post(
            f"{srv.url}/v1/verify", content=raw, headers={"content-type": "application/json"}
        )
        chunked = httpx.post(f"{srv.url}/v1/verify", content=iter([raw[:1500], raw[1500:]]))
        many = httpx.post(f"{srv.url}/v1/verify", json={"trajectories": [{"messages": [
            {"role": "user", "content": "hi"}]}] * 4})  # fmt: skip
    for r in (declared, chunked):
        assert r.status_code == 413
        assert r.json()["error"]["field"] == "body" and "2000" in r.json()["error"]["message"]
    assert many.status_code == 413 and many.json()["error"]["field"] == "trajectories"


@pytest.mark.parametrize(
    ("body", "status", "field"),
    [
        (b'{"messages": [', 400, "body"),
        (b"[1, 2]", 400, "body"),
        (b'{"messages": [{"role": "user", "content": "x"}], "temperature": 1}', 422, "temperature"),
        (b'{"trajectories": [{"messages": [{"role": "robot", "content": "x"}]}]}', 422,
         "trajectories[0].messages[0].role"),
        (b'{"trajectories": [{"id": "a"}]}', 422, "trajectories[0].messages"),
        (b'{"messages": [{"role": "user", "content": "x"}, {"role": "tool", "tool_call_id": "zz", "content": "1"}]}',
         422, "messages[1].tool_call_id"),
        (b'{"messages": [{"role": "user", "content": "x"}], "siblings": [[{"role": "assistant"}]]}', 422,
         "siblings[0]"),
        (b'{"trajectories": []}', 422, "trajectories"),
    ],
)  # fmt: skip
def test_bad_input_is_a_4xx_naming_the_field(scorer, body, status, field):
    with ServedApp(create_app(scorer)) as srv:
        r = httpx.post(f"{srv.url}/v1/verify", content=body)
    assert r.status_code == status, r.text
    assert r.json()["error"]["field"] == field
    assert r.json()["error"]["message"]


def test_log_to_stores_the_scored_trajectories_as_imported_runs(scorer, tmp_path):
    body, _ = _batch(3)
    log = TrajectoryLog(tmp_path / "prod.duckdb")
    try:
        with ServedApp(create_app(scorer, trajectory_log=log)) as srv:
            first = httpx.post(f"{srv.url}/v1/verify", json=body, timeout=30).json()
            again = httpx.post(f"{srv.url}/v1/verify", json=body, timeout=30).json()
    finally:
        log.close()
    assert first["logged"] == 9 and again["logged"] == 0  # 3 trajectories with 2 siblings each; no duplicates
    with Store(tmp_path / "prod.duckdb", read_only=True) as store:
        questions = store.questions()
        runs = store.runs()
        mct = store.query("SELECT count(*) AS n FROM mct")[0]["n"]
    assert len(questions) == 3 and {q.origin for q in questions} == {"import"}
    assert len(runs) == 9 and mct == 3
    ids = sorted(q.meta["import"]["runs"]["0"]["meta"]["id"] for q in questions)
    assert ids == ["t0", "t1", "t2"]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_magv_serve_verifier_command_answers_and_logs(model_file, tmp_path, embeddings):
    port = _free_port()
    db = tmp_path / "log.duckdb"
    env = {**os.environ, **embeddings, "PYTHONUNBUFFERED": "1"}
    cmd = [sys.executable, "-m", "magv", "serve", "verifier", "--model-file", str(model_file),
           "--port", str(port), "--log-to", str(db)]  # fmt: skip
    proc = subprocess.Popen(
        cmd, cwd=tmp_path, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )
    try:
        deadline = time.monotonic() + 240  # a loaded machine takes minutes to import and load the model
        while True:
            try:
                if httpx.get(f"http://127.0.0.1:{port}/health").status_code == 200:
                    break
            except httpx.TransportError:
                pass
            if proc.poll() is not None or time.monotonic() > deadline:
                proc.kill()  # else communicate() waits for a live server forever
                raise AssertionError(f"service did not start: {proc.communicate()[1]}")
            time.sleep(0.2)
        body, truth = _batch(4)
        r = httpx.post(f"http://127.0.0.1:{port}/v1/verify", json=body, timeout=30)
        assert r.status_code == 200, r.text
        assert [x["verdict"] == "correct" for x in r.json()["results"]] == truth
        assert r.json()["logged"] == 12
    finally:
        proc.terminate()
        proc.wait(timeout=20)
    with Store(db, read_only=True) as store:
        assert len(store.runs()) == 12


# -- magv verify score --input ---------------------------------------------------------------------


def _write(path: Path, lines: list[dict]) -> Path:
    path.write_text("".join(json.dumps(x) + "\n" for x in lines))
    return path


def test_score_input_file_to_output_file_without_a_database(model_file, tmp_path, embeddings, capsys):
    src = _write(tmp_path / "traj.jsonl", import_lines(4))
    out = tmp_path / "verdicts.jsonl"
    code = main(["verify", "score", "--input", str(src), "--output", str(out), "--model-file", str(model_file),
                 "--json"])  # fmt: skip
    assert code == 0
    summary = json.loads(capsys.readouterr().out)
    assert summary["scored"] == 12 and summary["correct"] == 6
    rows = [json.loads(x) for x in out.read_text().splitlines()]
    assert [(r["question_id"], r["run"]) for r in rows] == [(f"p{i}", r) for i in range(4) for r in range(3)]
    assert [r["verdict"] for r in rows] == (["correct"] * 3 + ["incorrect"] * 3) * 2
    assert all(len(r["reasons"]) == 5 and r["model"] == "test-model" for r in rows)
    assert not (tmp_path / "data").exists() and not list(tmp_path.glob("**/*.duckdb"))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["traj.jsonl", "verdicts.jsonl"]


def test_score_reads_stdin_and_writes_stdout(model_file, tmp_path, embeddings, capsys, monkeypatch):
    lines = import_lines(2)
    monkeypatch.setattr(sys, "stdin", io.StringIO("".join(json.dumps(x) + "\n" for x in lines)))
    assert main(["verify", "score", "--input", "-", "--output", "-", "--model-file", str(model_file)]) == 0
    rows = [json.loads(x) for x in capsys.readouterr().out.splitlines()]
    assert len(rows) == 6 and rows[0]["verdict"] == "correct" and rows[3]["verdict"] == "incorrect"
    assert not list(tmp_path.glob("**/*.duckdb"))


def test_a_bad_line_is_refused_with_file_line_field_and_nothing_is_written(model_file, tmp_path, capsys):
    lines = import_lines(2)
    lines[4]["messages"][1]["tool_calls"][0]["function"]["arguments"] = "{not json"
    src = _write(tmp_path / "traj.jsonl", lines)
    out = tmp_path / "verdicts.jsonl"
    out.write_text("old\n")
    code = main(
        ["verify", "score", "--input", str(src), "--output", str(out), "--model-file", str(model_file)]
    )
    assert code == 2
    err = capsys.readouterr().err
    assert f"{src}:5" in err and "messages[1].tool_calls[0].function.arguments" in err
    assert out.read_text() == "old\n"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["traj.jsonl", "verdicts.jsonl"]


def test_score_input_without_model_file_or_database_is_a_clear_error(tmp_path, capsys):
    src = _write(tmp_path / "traj.jsonl", import_lines(1))
    assert main(["verify", "score", "--input", str(src)]) == 2
    assert "--model-file" in capsys.readouterr().err
    assert not (tmp_path / "data").exists()


def test_score_input_fail_under_gates_on_the_share_verified(model_file, tmp_path, embeddings, capsys):
    src = _write(tmp_path / "traj.jsonl", import_lines(2))
    out = tmp_path / "v.jsonl"
    args = ["verify", "score", "--input", str(src), "--output", str(out), "--model-file", str(model_file)]
    assert main([*args, "--fail-under", "0.4"]) == 0
    assert main([*args, "--fail-under", "0.6"]) == 1
    assert "below the bar" in capsys.readouterr().err


def test_score_input_uses_the_registered_model_of_an_existing_store(model_file, tmp_path, embeddings, capsys):
    import shutil

    from magv.verify import FEATURE_NAMES, FEATURE_VERSION

    (tmp_path / "data" / "models").mkdir(parents=True)
    registered = shutil.copy(model_file, tmp_path / "data" / "models" / "m1.skops")
    with Store(tmp_path / "data" / "magv.duckdb") as store:
        store.add_verifier_model({"id": "m1", "name": "logreg", "path": str(registered),
                                  "feature_version": FEATURE_VERSION, "features": list(FEATURE_NAMES),
                                  "metrics": {}})  # fmt: skip
    before = (tmp_path / "data" / "magv.duckdb").stat().st_mtime_ns
    src = _write(tmp_path / "traj.jsonl", import_lines(1))
    assert main(["verify", "score", "--input", str(src), "--output", "-"]) == 0
    rows = [json.loads(x) for x in capsys.readouterr().out.splitlines()]
    assert [r["model"] for r in rows] == ["m1"] * 3
    assert (tmp_path / "data" / "magv.duckdb").stat().st_mtime_ns == before  # read only


def test_a_failed_log_still_answers_the_verdicts_and_says_so(scorer, tmp_path):
    log = TrajectoryLog(tmp_path / "prod.duckdb")
    log.store.close()  # every write now fails
    body, truth = _batch(2)
    with ServedApp(create_app(scorer, trajectory_log=log)) as srv:
        r = httpx.post(f"{srv.url}/v1/verify", json=body, timeout=30)
    assert r.status_code == 200
    assert [x["verdict"] == "correct" for x in r.json()["results"]] == truth
    assert "logged" not in r.json() and r.json()["log_error"]


def test_a_model_file_that_is_not_a_verifier_is_refused_before_scoring(tmp_path, capsys):
    bad = tmp_path / "model.skops"
    bad.write_bytes(b"not a zip file")
    src = _write(tmp_path / "traj.jsonl", import_lines(1))
    out = tmp_path / "v.jsonl"
    assert main(["verify", "score", "--input", str(src), "--output", str(out), "--model-file", str(bad)]) == 1
    assert "damaged or not a skops file" in capsys.readouterr().err
    assert not out.exists()


def _tied_runs() -> list[list[dict]]:
    """Five runs of one question: two trajectories twice each (a tie for the most common) and one
    alone, with different last words."""
    q = "where is my order 7?"
    return [messages(q, ["find_customer", "get_order"], response="It ships today."),
            messages(q, ["get_order", "refund"], response="Refunded."),
            messages(q, ["find_customer", "get_order"], response="Shipping today, as planned."),
            messages(q, ["get_order", "refund"], failed=True, response="Sorry."),
            messages(q, ["cancel_order"], response="Cancelled.")]  # fmt: skip


ORDERS = [(0, 1, 2, 3, 4), (4, 3, 2, 1, 0), (1, 0, 3, 2, 4), (2, 4, 0, 1, 3)]


def test_a_verdict_does_not_depend_on_the_order_its_siblings_arrive_in(
    scorer, model_file, tmp_path, embeddings
):
    """The same conversations, listed in other orders (and numbered otherwise), get the same
    probability over HTTP, from a file and from the store."""
    from magv.verify.features import compute_features
    from magv.verify.importer import import_trajectories
    from magv.verify.models import load_model
    from magv.verify.scoring import Scorer
    from magv.verify.training import checked_matrix

    runs = _tied_runs()
    key = [json.dumps(m) for m in runs]

    def over_http(order):
        body = {"trajectories": [{"messages": runs[i], "group": "g"} for i in order]}
        entries, _ = parse_request(json.dumps(body).encode(), 100)
        return {key[i]: v.probability for i, v in zip(order, score_entries(scorer, entries), strict=True)}

    def from_file(order, n):
        lines = [{"question_id": "q", "run": r, "messages": runs[i]} for r, i in enumerate(order)]
        src, out = _write(tmp_path / f"in{n}.jsonl", lines), tmp_path / f"out{n}.jsonl"
        assert main(["verify", "score", "--input", str(src), "--output", str(out), "--model-file",
                     str(model_file)]) == 0  # fmt: skip
        rows = [json.loads(x) for x in out.read_text().splitlines()]
        return {key[order[r["run"]]]: r["probability"] for r in rows}

    bundle = load_model(model_file)
    plain = Scorer(bundle, model_id="test-model")

    def from_store(order, n):
        lines = [
            {"question_id": "q", "run": r, "messages": runs[i], "label": None} for r, i in enumerate(order)
        ]
        src = _write(tmp_path / f"store{n}.jsonl", lines)
        with Store(tmp_path / f"s{n}.duckdb") as store:
            import_trajectories(store, src)
            compute_features(store, HashEmbedder(), alternates=False)
            run_ids, X = checked_matrix(store, bundle["feature_version"], plain.names)
            index = {r.id: r.run_index for r in store.runs()}
            proba = plain.predict(X).proba
        return {key[order[index[r]]]: round(float(p), 6) for r, p in zip(run_ids, proba, strict=True)}

    for path in (over_http, from_file, from_store):
        answers = [path(order) if path is over_http else path(order, n) for n, order in enumerate(ORDERS)]
        assert all(a == answers[0] for a in answers), path.__name__
        assert len(set(answers[0].values())) > 1  # the runs are told apart, just not by their order
