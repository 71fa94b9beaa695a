"""Scheduled runs: a real Prefect server on 127.0.0.1, the pipeline served by `magv schedule` and
deployed from flows/prefect.yaml to a process work pool, each run triggered and awaited, against
the fake LLM server."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import duckdb
import pytest

from magv.cli import main
from tests.fake_agents import AgentScript
from tests.fakellm import FakeLLMServer
from tests.schedule_helpers import BIN, REPO, PrefectServer, start, stop, tail, wait_for

# Small, but with enough labelled rows in enough question groups for the verifier's grouped CV.
SMALL = {"MAGV_PIPELINE__MAX_TARGETS": "4", "MAGV_PIPELINE__QUESTIONS_PER_TARGET": "2",
         "MAGV_PIPELINE__QUESTIONS": "6", "MAGV_PIPELINE__RUNS": "2", "MAGV_PIPELINE__ALTERNATES": "1"}  # fmt: skip
RUN_TIMEOUT = 300.0


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    srv = PrefectServer(tmp_path_factory.mktemp("prefect") / "home")
    try:
        yield srv.start()
    finally:
        srv.stop()


@pytest.fixture(scope="module")
def fake_llm():
    with FakeLLMServer(AgentScript("retail")) as srv:
        yield srv


def magv_env(fake_llm: FakeLLMServer, work: Path) -> dict[str, str]:
    return {
        "MAGV_LLM__ENDPOINTS": json.dumps([fake_llm.base_url]), "MAGV_EMBEDDINGS__BACKEND": "endpoint",
        "MAGV_EMBEDDINGS__ENDPOINT": fake_llm.base_url, "MAGV_DATABASE": str(work / "magv.duckdb"),
        "MAGV_DOMAIN_DATA_DIR": str(work / "domains"), **SMALL,
    }  # fmt: skip


def run_and_wait(server: PrefectServer, name: str, procs, logs):
    """Trigger one run of a deployment through the API and wait for its final state."""
    from prefect.client.orchestration import get_client
    from prefect.deployments import run_deployment
    from prefect.settings import PREFECT_API_URL, temporary_settings

    with temporary_settings(updates={PREFECT_API_URL: server.api_url}):

        def deployment():
            with get_client(sync_client=True) as client:
                return client.read_deployment_by_name(name)

        dep = wait_for(deployment, f"deployment {name}", 120, procs, logs)
        run = run_deployment(name=name, timeout=RUN_TIMEOUT, poll_interval=1)
    assert run.state is not None and run.state.is_completed(), f"{run.state}\n{tail(*logs)}"
    return dep, run


def table_counts(db: Path) -> dict[str, int]:
    con = duckdb.connect(str(db), read_only=True)
    try:
        tables = ("pipeline_runs", "questions", "runs", "mct", "llm_calls", "features", "predictions")
        return {t: con.execute(f"SELECT count(*) FROM {t}").fetchone()[0] for t in tables}
    finally:
        con.close()


def pipeline_statuses(db: Path) -> list[tuple[str, str]]:
    con = duckdb.connect(str(db), read_only=True)
    try:
        rows = con.execute(
            "SELECT settings->>'kind', status FROM pipeline_runs ORDER BY started_at"
        ).fetchall()
        return [tuple(r) for r in rows]
    finally:
        con.close()


def test_dry_run_prints_json_parameters_with_absolute_paths(capsys):
    assert main(["schedule", "--cron", "0 3 * * *", "--domain", "logs", "--dry-run", "--json"]) == 0
    plan = json.loads(capsys.readouterr().out)
    assert plan["deployment"] == "magv-scheduled-pipeline/magv-logs"
    settings = plan["parameters"]["settings"]
    assert Path(settings["database"]).is_absolute() and settings["domain"] == "logs"
    # parameters are readable by anyone with the UI: runs take the key from their environment
    assert "api_key" not in settings["llm"]
    assert json.loads(json.dumps(plan["parameters"])) == plan["parameters"]


@pytest.mark.parametrize(
    "args, message",
    [
        (["--cron", "0 3 * *"], "--cron '0 3 * *'"),
        (["--cron", "0 3 * * *", "--timezone", "Mars/Olympus"], "Mars/Olympus"),
        (["--cron", "0 3 * * *", "--domain", "no-such-domain"], "no-such-domain"),
    ],
)
def test_bad_schedule_input_exits_2(args, message, capsys):
    assert main(["schedule", *args, "--dry-run"]) == 2
    assert message in capsys.readouterr().err


def test_schedule_without_a_prefect_server_says_how_to_start_one(capsys, monkeypatch):
    from prefect.settings import PREFECT_API_URL, temporary_settings

    monkeypatch.delenv("PREFECT_API_URL", raising=False)
    with temporary_settings(updates={PREFECT_API_URL: None}):
        assert main(["schedule", "--cron", "0 3 * * *"]) == 2
    assert "prefect server start" in capsys.readouterr().err


@pytest.mark.integration
def test_magv_schedule_serves_a_run_to_completion(server, fake_llm, tmp_path):
    work = tmp_path / "work"
    log = tmp_path / "serve.log"
    env = server.env(**magv_env(fake_llm, work))
    args = [str(BIN / "magv"), "schedule", "--cron", "0 3 * * *", "--name", "nightly-test", "-d", "retail"]
    proc = start(args, log, env, tmp_path)
    try:
        dep, run = run_and_wait(server, "magv-scheduled-pipeline/nightly-test", (proc,), (log, server.log))
    finally:
        stop(proc)
    assert [s.schedule.cron for s in dep.schedules] == ["0 3 * * *"]
    assert dep.parameters["settings"]["database"] == str(work / "magv.duckdb")
    assert pipeline_statuses(work / "magv.duckdb") == [("pipeline", "completed")]
    counts = table_counts(work / "magv.duckdb")
    # 4 seeds and 6 kept of 8 generated questions, answered twice each, then one alternate each.
    assert counts["questions"] >= 18 and counts["runs"] >= 20 and counts["mct"] >= 10, counts
    assert counts["llm_calls"] >= counts["runs"], counts  # every run logged its calls
    assert counts["features"] > 0 and counts["predictions"] > 0, counts  # the verifier stages ran too


@pytest.mark.integration
def test_prefect_yaml_deploys_to_a_work_pool_and_a_worker_runs_it(server, fake_llm, tmp_path):
    """The deployments of flows/prefect.yaml, run by a process worker in the project directory,
    read magv.toml there (no settings in the deployment)."""
    project = tmp_path / "project"
    project.mkdir()
    env = server.env()
    (project / "magv.toml").write_text(_toml(magv_env(fake_llm, project / "data")))
    worker_log, deploy_log = tmp_path / "worker.log", tmp_path / "deploy.log"
    worker = start([str(BIN / "prefect"), "worker", "start", "--pool", "magv", "--type", "process"],
                   worker_log, env, project)  # fmt: skip
    try:
        from prefect.client.orchestration import get_client
        from prefect.settings import PREFECT_API_URL, temporary_settings

        def pool():
            with (
                temporary_settings(updates={PREFECT_API_URL: server.api_url}),
                get_client(sync_client=True) as client,
            ):
                return client.read_work_pool("magv")

        wait_for(pool, "work pool magv", 120, (worker,), (worker_log,))
        deploy = subprocess.run(
            [str(BIN / "prefect"), "deploy", "--all", "--prefect-file", str(REPO / "flows" / "prefect.yaml")],
            cwd=project, env=env, capture_output=True, text=True, timeout=180,
        )  # fmt: skip
        deploy_log.write_text(deploy.stdout + deploy.stderr)
        assert deploy.returncode == 0, tail(deploy_log)
        logs = (worker_log, server.log)
        dep, _ = run_and_wait(server, "magv-scheduled-pipeline/magv-pipeline-nightly", (worker,), logs)
        verify_dep, _ = run_and_wait(server, "magv-verify/magv-verify-nightly", (worker,), logs)
    finally:
        stop(worker)
    assert [s.schedule.cron for s in dep.schedules] == ["0 3 * * *"]
    assert [s.schedule.cron for s in verify_dep.schedules] == ["30 4 * * *"]
    assert dep.work_pool_name == "magv"
    db = project / "data" / "magv.duckdb"
    assert pipeline_statuses(db) == [("pipeline", "completed"), ("verify", "completed")]
    assert table_counts(db)["runs"] >= 20


def _toml(env: dict[str, str]) -> str:
    """magv.toml holding what magv_env puts in MAGV_* variables."""
    sections: dict[str, dict[str, str]] = {}
    top: dict[str, str] = {}
    for key, value in env.items():
        parts = key.removeprefix("MAGV_").lower().split("__")
        literal = value if value.startswith("[") or value.isdigit() else json.dumps(value)
        if len(parts) == 1:
            top[parts[0]] = literal
        else:
            sections.setdefault(parts[0], {})[parts[1]] = literal
    lines = [f"{k} = {v}" for k, v in top.items()]
    for name, values in sections.items():
        lines += ["", f"[{name}]", *(f"{k} = {v}" for k, v in values.items())]
    return "\n".join(lines) + "\n"
