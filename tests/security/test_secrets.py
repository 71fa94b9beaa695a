"""The API key is a secret: masked in `magv config show`, never in a settings dump, so never in
`pipeline_runs.settings` nor a Prefect flow parameter; read where it is used."""

from __future__ import annotations

import json

import pytest

import magv.config as config
from magv.cli import main
from magv.config import MASK, load_settings, settings_from_dict

SECRET = "sk-live-0123456789abcdef"


@pytest.fixture(autouse=True)
def clean_key(monkeypatch, tmp_path):
    monkeypatch.delenv("MAGV_LLM__API_KEY", raising=False)
    monkeypatch.delenv("MAGV_CONFIG", raising=False)
    monkeypatch.setattr(config, "_file_key", None)
    monkeypatch.chdir(tmp_path)


def _toml(tmp_path, extra: str = "") -> None:
    (tmp_path / "magv.toml").write_text(
        f'[llm]\napi_key = "{SECRET}"\nendpoints = ["http://127.0.0.1:9/v1"]\n{extra}'
    )


@pytest.mark.parametrize("as_json", [True, False])
def test_config_show_masks_the_key(tmp_path, capsys, as_json):
    _toml(tmp_path)
    assert main(["config", "show", *(["--json"] if as_json else [])]) == 0
    out = capsys.readouterr().out
    assert SECRET not in out and MASK in out
    if as_json:
        assert json.loads(out)["llm"]["api_key"].startswith(MASK)


def test_config_show_masks_a_key_from_the_environment(monkeypatch, capsys):
    monkeypatch.setenv("MAGV_LLM__API_KEY", SECRET)
    assert main(["config", "show", "--json"]) == 0
    out = capsys.readouterr().out
    assert SECRET not in out and "from MAGV_LLM__API_KEY" in out


def test_no_dump_holds_the_key(tmp_path):
    _toml(tmp_path)
    cfg = load_settings()
    assert cfg.llm.secret_key() == SECRET
    for dump in (cfg.model_dump(), cfg.model_dump(mode="json"), json.loads(cfg.model_dump_json())):
        assert SECRET not in json.dumps(dump, default=str) and "api_key" not in dump["llm"]
    assert SECRET not in repr(cfg) and SECRET not in str(cfg.llm)


def test_settings_rebuilt_from_a_dump_read_the_key_at_the_point_of_use(tmp_path, monkeypatch):
    _toml(tmp_path)
    dump = load_settings().model_dump(mode="json")  # what a flow receives
    assert settings_from_dict(dump).llm.secret_key() == SECRET  # the key this process's magv.toml gave
    monkeypatch.setenv("MAGV_LLM__API_KEY", "sk-from-env")
    assert settings_from_dict(dump).llm.secret_key() == "sk-from-env"


def test_a_key_file_is_read_at_the_point_of_use(tmp_path):
    key = tmp_path / "key"
    key.write_text(SECRET + "\n")
    (tmp_path / "magv.toml").write_text(f'[llm]\napi_key_file = "{key}"\n')
    dump = load_settings().model_dump(mode="json")
    assert SECRET not in json.dumps(dump)
    assert settings_from_dict(dump).llm.secret_key() == SECRET


def test_without_any_key_local_servers_get_the_placeholder():
    assert load_settings().llm.secret_key() == config.PLACEHOLDER_KEY


def test_pipeline_runs_settings_never_hold_the_key(tmp_path):
    from magv.pipeline.session import session
    from tests.reliability_helpers import query

    _toml(tmp_path)
    cfg = load_settings(database=tmp_path / "m.duckdb")
    with session(cfg.model_dump(mode="json"), "test") as sess:
        assert sess.settings.llm.secret_key() == SECRET
    rows = query(tmp_path / "m.duckdb", "SELECT CAST(settings AS VARCHAR) FROM pipeline_runs")
    assert rows and all(SECRET not in r[0] for r in rows)
    assert "api_key" not in json.loads(rows[0][0])["llm"]


def test_flow_parameters_never_hold_the_key(tmp_path, monkeypatch):
    """`magv run` hands its flow `cfg.model_dump(mode="json")`: catch what the flow receives."""
    import magv.flows.pipeline as pipeline_module
    from magv.commands import pipeline as command

    _toml(tmp_path)
    seen = {}

    class Flow:
        def with_options(self, **_):
            return self

        def __call__(self, settings, **kwargs):
            seen.update(settings=settings, kwargs=kwargs)
            return {}

    monkeypatch.setattr(pipeline_module, "pipeline_flow", Flow())
    monkeypatch.setattr(command, "_check_inputs", lambda cfg: None)
    monkeypatch.setattr(command, "_open_lock", lambda cfg, wait: None)
    command.run_flow("pipeline", load_settings(), as_json=True)
    assert seen and SECRET not in json.dumps(seen, default=str)


def test_workers_get_the_key_in_memory_not_in_a_dump(tmp_path, monkeypatch):
    """A Dask worker unpickles the settings in a process that never read magv.toml."""
    import pickle

    _toml(tmp_path)
    rebuilt = settings_from_dict(load_settings().model_dump(mode="json"))
    monkeypatch.setattr(config, "_file_key", None)  # as in the worker process
    worker = pickle.loads(pickle.dumps(rebuilt))
    assert worker.llm.secret_key() == SECRET
    assert SECRET not in json.dumps(worker.model_dump(mode="json"))
