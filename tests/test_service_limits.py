"""`magv serve verifier` under load and abuse: bounded work per request (graph edit distance,
comparisons), work stopped when the client leaves, a bearer token, header timeouts and connection
limits, `--log-to` keeping each run's status and every distinct trajectory, and no 500 for bad
input."""

from __future__ import annotations

import copy
import json
import random
import socket
import threading
import time
from typing import Any

import httpx
import numpy as np
import pytest

from magv.cli import main
from magv.config import load_settings
from magv.service.app import create_app, score_entries
from magv.service.log import TrajectoryLog
from magv.service.payload import PayloadError, parse_request
from magv.service.server import Limits, exposure_warning, read_token, uvicorn_config
from magv.store import Store
from magv.verify import features as F
from magv.verify.budget import WorkBudget, WorkCancelled
from magv.verify.scoring import load_scorer
from tests.service_helpers import ServedApp, messages, train_model, worst_case
from tests.verify_helpers import HashEmbedder

TOOLS = [f"tool_{k}" for k in range(14)]


@pytest.fixture(scope="module")
def model_file(tmp_path_factory):
    return train_model(tmp_path_factory.mktemp("model") / "verifier.skops")


@pytest.fixture(scope="module")
def scorer(model_file):
    return load_scorer(load_settings(), model_file=model_file, embedder=HashEmbedder())


# -- graph edit distance ---------------------------------------------------------------------------


def test_the_label_bound_is_an_upper_bound_of_the_exact_ged():
    rng = random.Random(3)
    for _ in range(300):
        a = tuple(rng.choice("abcdef") for _ in range(rng.randint(0, 8)))
        b = tuple(rng.choice("abcdefg") for _ in range(rng.randint(0, 8)))
        exact, is_exact = F.graph_edit_distance(F.Calls(a, a), F.Calls(b, b))
        if is_exact:
            assert F.label_bound(a, b) >= exact, (a, b)
    assert F.label_bound(("a", "b"), ("a", "b")) == 0.0
    assert F.label_bound(("a",), ("b",)) == 1.0  # substitute the node, keep the edge from START


def test_a_spent_budget_gives_bounded_values_and_a_cancelled_one_stops():
    a = tuple(TOOLS[:10])
    b = tuple(reversed(TOOLS[:10]))
    with WorkBudget(ged_seconds=0).active() as budget:
        cost, exact = F.graph_edit_distance(F.Calls(a, a), F.Calls(b, b))
    assert not exact and cost == F.label_bound(a, b) and budget.bounded_pairs == 1
    small = (("x", "y"), ("y", "x"))
    with WorkBudget(ged_seconds=10).active():
        assert F.graph_edit_distance(*(F.Calls(s, s) for s in small)) == F.graph_edit_distance(
            *(F.Calls(s, s) for s in small))  # fmt: skip
    from magv.messages import messages_to_trajectory

    ts = [messages_to_trajectory(messages("q", list(TOOLS[: 9 + i % 3])))[0] for i in range(4)]
    cancelled = WorkBudget()
    cancelled.cancelled.set()
    with cancelled.active(), pytest.raises(WorkCancelled):
        F.TrajectoryFeaturizer().transform(ts, [0] * 4)


def test_the_worst_case_request_is_answered_within_its_budget_and_says_bounded(scorer):
    body = worst_case(40)
    assert 30_000 < len(json.dumps(body)) < 200_000
    with ServedApp(create_app(scorer, ged_seconds=0.5)) as srv:
        started = time.perf_counter()
        r = httpx.post(f"{srv.url}/v1/verify", json=body, timeout=120)
        took = time.perf_counter() - started
    assert r.status_code == 200, r.text
    results = r.json()["results"]
    assert len(results) == 40 and {x["ged"] for x in results} == {"bounded"}
    # 1,560 comparisons of 780 distinct pairs; before the budget each pair could search 0.2 s (156 s).
    assert took < 30, took


def test_small_graphs_stay_exact_and_say_so(scorer):
    body = {"trajectories": [{"group": "g", "messages": messages("q", names)}
                             for names in (["a", "b"], ["b", "a"], ["a", "b", "c"])]}  # fmt: skip
    entries, _ = parse_request(json.dumps(body).encode(), 10)
    unbounded = [v.probability for v in score_entries(scorer, entries)]
    with ServedApp(create_app(scorer)) as srv:
        results = httpx.post(f"{srv.url}/v1/verify", json=body, timeout=30).json()["results"]
    assert [x["ged"] for x in results] == ["exact"] * 3
    assert [x["probability"] for x in results] == unbounded


def test_a_request_over_the_comparison_budget_is_a_413(scorer):
    with ServedApp(create_app(scorer, max_pairs=100)) as srv:
        r = httpx.post(f"{srv.url}/v1/verify", json=worst_case(11), timeout=30)
        ok = httpx.post(f"{srv.url}/v1/verify", json=worst_case(10), timeout=30)
    assert r.status_code == 413 and r.json()["error"]["field"] == "trajectories"
    assert "110 sibling comparisons" in r.json()["error"]["message"]
    assert ok.status_code == 200


def test_a_request_whose_client_left_stops_and_frees_its_worker(scorer, caplog):
    body = json.dumps(worst_case(60, seed=1)).encode()
    app = create_app(scorer, ged_seconds=600, workers=1)
    with ServedApp(app) as srv, caplog.at_level("INFO", logger="magv.service"):
        host, port = srv.url.removeprefix("http://").split(":")
        gone = socket.create_connection((host, int(port)))
        gone.sendall(b"POST /v1/verify HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                     b"Content-Length: %d\r\n\r\n" % len(body) + body)  # fmt: skip
        time.sleep(1.0)  # its scoring holds the one worker
        gone.close()
        started = time.perf_counter()
        r = httpx.post(f"{srv.url}/v1/verify", json={"messages": messages("q", ["a"])}, timeout=60)
        waited = time.perf_counter() - started
    assert r.status_code == 200
    # Left alone, the first request would hold the worker for minutes (1,770 pairs, 0.2 s each).
    assert waited < 10, waited
    assert any("client left" in rec.message for rec in caplog.records)


# -- bad input is never a 500 -----------------------------------------------------------------------


def _places(value: Any, path: tuple = ()):
    children = (
        value.items() if isinstance(value, dict) else enumerate(value) if isinstance(value, list) else ()
    )
    for key, child in children:
        yield (*path, key)
        yield from _places(child, (*path, key))


def test_any_wrong_type_anywhere_in_a_request_is_a_4xx(scorer):
    base = {"trajectories": [
        {"id": "a", "group": "g", "status": "ok", "messages": messages("q", ["find", "get"])},
        {"id": "b", "messages": [{"type": "human", "content": "q"}, {"type": "ai", "content": "done"}],
         "siblings": [messages("q", ["get"])]},
    ]}  # fmt: skip
    for path in _places(base):
        for wrong in ([], ["ok"], {}, {"a": 1}, 7, True, None, ""):
            doc = copy.deepcopy(base)
            node = doc
            for key in path[:-1]:
                node = node[key]
            node[path[-1]] = wrong
            try:
                entries, _ = parse_request(json.dumps(doc).encode(), 10)
            except PayloadError as exc:
                assert 400 <= exc.status < 500 and exc.field, (path, wrong)
                continue
            score_entries(scorer, entries)  # accepted input scores without an error


@pytest.mark.parametrize(
    ("item", "field"),
    [
        ({"messages": [{"role": ["user"], "content": "q"}]}, "messages[0].role"),
        ({"status": ["ok"], "messages": [{"role": "user", "content": "q"}]}, "status"),
        ({"messages": [{"type": {}, "content": "q"}]}, "messages[0].type"),
    ],
)
def test_names_given_as_lists_or_objects_are_422_naming_the_field(scorer, item, field):
    with ServedApp(create_app(scorer)) as srv:
        r = httpx.post(f"{srv.url}/v1/verify", json=item, timeout=30)
    assert r.status_code == 422, r.text
    assert r.json()["error"]["field"] == field


# -- token, exposure --------------------------------------------------------------------------------


def test_a_token_guards_verify_and_leaves_health_open(scorer):
    one = {"messages": messages("q", ["a"])}
    with ServedApp(create_app(scorer, token="s3cret-token")) as srv:
        none = httpx.post(f"{srv.url}/v1/verify", json=one)
        wrong = httpx.post(f"{srv.url}/v1/verify", json=one, headers={"Authorization": "Bearer nope"})
        right = httpx.post(f"{srv.url}/v1/verify", json=one, headers={"Authorization": "Bearer s3cret-token"})
        health = httpx.get(f"{srv.url}/health")
    for r in (none, wrong):
        assert r.status_code == 401 and r.json()["error"]["field"] == "Authorization"
        assert r.headers["www-authenticate"] == "Bearer"
    assert right.status_code == 200 and health.status_code == 200


def test_the_token_comes_from_a_file_or_the_environment(tmp_path, monkeypatch):
    assert read_token(None) is None
    monkeypatch.setenv("MAGV_SERVICE_TOKEN", " from-env\n")
    assert read_token(None) == "from-env"
    (tmp_path / "t").write_text("from-file\n")
    assert read_token(tmp_path / "t") == "from-file"
    (tmp_path / "empty").write_text("\n")
    for bad in (tmp_path / "empty", tmp_path / "missing"):
        with pytest.raises(Exception, match="--token-file"):
            read_token(bad)


def test_beyond_loopback_the_service_warns_louder_with_log_to(tmp_path):
    assert exposure_warning("127.0.0.1", None, tmp_path / "db") is None
    assert exposure_warning("::1", None, None) is None
    quiet = exposure_warning("0.0.0.0", None, None)
    loud = exposure_warning("0.0.0.0", None, tmp_path / "db")
    assert (
        "without a token" in quiet
        and "WITHOUT A TOKEN WITH --log-to" in loud
        and str(tmp_path / "db") in loud
    )
    assert "needs the bearer token" in exposure_warning("0.0.0.0", "t", tmp_path / "db")


def test_an_empty_token_file_is_refused(tmp_path, capsys):
    (tmp_path / "t").write_text("")
    assert (
        main(["serve", "verifier", "--model-file", str(tmp_path / "m"), "--token-file", str(tmp_path / "t")])
        == 2
    )
    assert "--token-file" in capsys.readouterr().err


# -- connections -------------------------------------------------------------------------------------


class _Served:
    """The app served with the command's own uvicorn configuration (magv.service.server)."""

    def __init__(self, app: Any, limits: Limits):
        import uvicorn

        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.port = self.sock.getsockname()[1]
        config = uvicorn_config(app, "127.0.0.1", self.port, limits)
        config.lifespan = "off"
        config.log_level = "error"
        self.server = uvicorn.Server(config)

    def __enter__(self) -> _Served:
        import asyncio

        self.thread = threading.Thread(
            target=lambda: asyncio.run(self.server.serve([self.sock])), daemon=True
        )
        self.thread.start()
        while not self.server.started:
            time.sleep(0.01)
        return self

    def __exit__(self, *exc: Any) -> None:
        self.server.should_exit = True
        self.thread.join(timeout=10)
        self.sock.close()


def _half_sent(port: int) -> socket.socket:
    s = socket.create_connection(("127.0.0.1", port))
    s.sendall(b"POST /v1/verify HTTP/1.1\r\nHost: x\r\nX-Slow: ")
    return s


def _closed_by_server(s: socket.socket, within: float) -> bool:
    s.settimeout(within)
    try:
        return s.recv(1024) == b"" or True  # closed, or an error answer before the close
    except TimeoutError:
        return False
    except OSError:
        return True


def test_half_sent_headers_are_cut_off_and_other_clients_get_in(scorer):
    limits = Limits(header_timeout=1.0, max_connections=30)
    with _Served(create_app(scorer), limits) as srv:
        slow = [_half_sent(srv.port) for _ in range(40)]
        try:
            # over the cap: closed at once; the others once their header time is up
            assert all(_closed_by_server(s, 5.0) for s in slow)
            r = httpx.post(f"http://127.0.0.1:{srv.port}/v1/verify", json={"messages": messages("q", ["a"])},
                           timeout=30)  # fmt: skip
        finally:
            for s in slow:
                s.close()
    assert r.status_code == 200


def test_a_complete_request_is_not_cut_off_by_the_header_timeout(scorer):
    limits = Limits(header_timeout=0.5)
    with _Served(create_app(scorer), limits) as srv, httpx.Client() as client:
        for _ in range(3):  # one keep-alive connection: each request's headers get their own time
            r = client.post(f"http://127.0.0.1:{srv.port}/v1/verify", json={"messages": messages("q", ["a"])})
            assert r.status_code == 200
            time.sleep(0.2)


# -- --log-to ------------------------------------------------------------------------------------


def test_log_to_keeps_the_status_each_run_was_scored_with(scorer, tmp_path):
    msgs = messages("where is order 7?", ["get_order"])
    log = TrajectoryLog(tmp_path / "prod.duckdb")
    try:
        with ServedApp(create_app(scorer, trajectory_log=log)) as srv:
            logged = [httpx.post(f"{srv.url}/v1/verify", json={"messages": msgs, "status": status}, timeout=30)
                      .json()["logged"] for status in ("max_steps", "llm_error", "ok", "ok")]  # fmt: skip
    finally:
        log.close()
    assert logged == [1, 1, 1, 0]
    with Store(tmp_path / "prod.duckdb", read_only=True) as store:
        statuses = sorted(r.trajectory.status for r in store.runs())
    assert statuses == ["llm_error", "max_steps", "ok"]


def test_log_to_stores_every_distinct_trajectory_of_a_batch_holding_one_twice(scorer, tmp_path):
    one = {"messages": messages("where is order 7?", ["get_order"])}
    other = {"messages": messages("cancel order 8", ["cancel_order"])}
    log = TrajectoryLog(tmp_path / "prod.duckdb")
    try:
        with ServedApp(create_app(scorer, trajectory_log=log)) as srv:
            r = httpx.post(f"{srv.url}/v1/verify", json={"trajectories": [one, other, one]}, timeout=30)
    finally:
        log.close()
    assert r.status_code == 200 and "log_error" not in r.json(), r.text
    assert r.json()["logged"] == 2
    with Store(tmp_path / "prod.duckdb", read_only=True) as store:
        assert sorted(q.text for q in store.questions()) == ["cancel order 8", "where is order 7?"]


def test_a_search_that_finds_no_path_in_its_time_still_gives_a_finite_bound(monkeypatch):
    from magv.messages import messages_to_trajectory

    monkeypatch.setattr(F, "GED_APPROX_TIMEOUT_S", 1e-9)  # the search stops before its first path
    runs = worst_case(6)["trajectories"]
    ts = [messages_to_trajectory(r["messages"])[0] for r in runs]
    X = F.TrajectoryFeaturizer().transform(ts, [0] * len(ts))
    assert np.isfinite(X).all()
    a, b = (F.tool_graph(t) for t in ts[:2])
    cost, exact = F.graph_edit_distance(a, b)
    assert not exact and cost <= F.graph_size(ts[0]) + F.graph_size(ts[1])


def test_a_tool_named_like_the_start_node_is_a_tool_of_its_own():
    big = tuple(TOOLS[:9])
    for a, b in (((), ("__start__",)), (big, ("__start__", *big))):
        assert F.tool_graph(F.Calls(b, b)).number_of_nodes() == len(set(b)) + 1
        cost, _ = F.graph_edit_distance(F.Calls(a, a), F.Calls(b, b))
        assert cost >= 2, (a, b)  # one node and one edge more, at least


@pytest.fixture
def fake_embeddings(monkeypatch):
    from tests.fakellm import FakeLLMServer

    with FakeLLMServer() as srv:
        monkeypatch.setenv("MAGV_EMBEDDINGS__BACKEND", "endpoint")
        monkeypatch.setenv("MAGV_EMBEDDINGS__ENDPOINT", srv.base_url)
        yield


@pytest.mark.parametrize(
    ("host", "token", "log_to", "expected"),
    [
        ("0.0.0.0", None, True, "WARNING LISTENING ON 0.0.0.0 WITHOUT A TOKEN WITH --log-to"),
        ("0.0.0.0", None, False, "without a token: any client"),
        ("0.0.0.0", "tok-123", True, "needs the bearer token"),
        ("127.0.0.1", None, True, None),
    ],
)
def test_the_command_warns_and_serves_with_its_limits(
    model_file, tmp_path, monkeypatch, capsys, fake_embeddings, host, token, log_to, expected
):
    import uvicorn

    served = []
    monkeypatch.setattr(uvicorn.Server, "run", lambda self: served.append(self.config))
    if token:
        monkeypatch.setenv("MAGV_SERVICE_TOKEN", token)
    args = ["serve", "verifier", "--model-file", str(model_file), "--host", host, "--header-timeout", "3"]
    if log_to:
        args += ["--log-to", str(tmp_path / "log.duckdb")]
    assert main(args) == 0
    err = " ".join(capsys.readouterr().err.split())
    if expected is None:
        assert "WARNING" not in err and "note:" not in err
    else:
        assert expected in err
    (config,) = served
    assert (config.limit_concurrency, config.timeout_keep_alive, config.backlog) == (64, 5, 128)
    assert config.http.__name__ == "GuardedH11Protocol"
