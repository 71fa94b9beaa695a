import pytest

from magv.config import load_settings
from magv.errors import BadInput


def test_defaults():
    s = load_settings()
    assert str(s.database) == "data/magv.duckdb"
    assert s.pipeline.runs == 3 and s.pipeline.alternates == 3 and s.pipeline.questions_per_target is None


def test_env_over_file_over_defaults(tmp_path, monkeypatch):
    cfg = tmp_path / "magv.toml"
    cfg.write_text('database = "from_file.duckdb"\n[pipeline]\nruns = 5\nalternates = 4\n')
    s = load_settings(cfg)
    assert str(s.database) == "from_file.duckdb" and s.pipeline.runs == 5
    monkeypatch.setenv("MAGV_PIPELINE__RUNS", "7")
    monkeypatch.setenv("MAGV_DATABASE", "from_env.duckdb")
    s = load_settings(cfg)
    assert s.pipeline.runs == 7 and str(s.database) == "from_env.duckdb"
    assert s.pipeline.alternates == 4  # untouched by env: the file still counts


def test_magv_toml_in_cwd_is_found(tmp_path):
    (tmp_path / "magv.toml").write_text('domain = "logs"\n')
    assert load_settings().domain == "logs"


def test_role_overrides_fall_back_to_defaults(tmp_path):
    cfg = tmp_path / "magv.toml"
    cfg.write_text(
        '[llm]\nendpoints = ["http://a/v1"]\nmodel = "m"\n'
        '[llm.roles.responder]\nendpoints = ["http://gpu1/v1", "http://gpu2/v1"]\ntemperature = 0.2\n'
    )
    llm = load_settings(cfg).llm
    assert llm.role("responder")["endpoints"] == ["http://gpu1/v1", "http://gpu2/v1"]
    assert llm.role("responder")["temperature"] == 0.2 and llm.role("responder")["model"] == "m"
    assert llm.role("judge")["endpoints"] == ["http://a/v1"]


@pytest.mark.parametrize(
    "text, expected",
    [
        ("database = [", "not valid TOML"),
        ("bogus = 1\n", "bogus: unknown setting"),
        ("[pipeline]\nruns = 0\n", "pipeline.runs"),
        ("[pipeline]\nrunz = 3\n", "pipeline.runz: unknown setting"),
        ('[llm.roles.cook]\nmodel = "x"\n', "llm.roles.cook: unknown role"),
    ],
)
def test_bad_config_names_file_and_field(tmp_path, text, expected):
    cfg = tmp_path / "magv.toml"
    cfg.write_text(text)
    with pytest.raises(BadInput) as info:
        load_settings(cfg)
    assert str(cfg) in str(info.value) and expected in str(info.value)


def test_bad_env_names_the_variable(monkeypatch):
    monkeypatch.setenv("MAGV_PIPELINE__RUNS", "many")
    with pytest.raises(BadInput, match="MAGV_PIPELINE__RUNS"):
        load_settings()
