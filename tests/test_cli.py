import json
import os
import subprocess
import sys

from magv.cli import main


def test_version(capsys):
    assert main(["--version"]) == 0
    assert "magv" in capsys.readouterr().out


def test_help_lists_commands(capsys):
    assert main(["--help"]) == 0
    out = capsys.readouterr().out
    assert "config" in out and "db" in out


def test_config_show_json(capsys):
    assert main(["config", "show", "--json"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert data["pipeline"]["runs"] == 3


def test_db_info_reports_tables(tmp_path, capsys):
    from magv.store import Store

    db = tmp_path / "x.duckdb"
    Store(db).close()
    (tmp_path / "magv.toml").write_text(f'database = "{db}"\n')
    assert main(["db", "info", "--json"]) == 0
    info = json.loads(capsys.readouterr().out)
    assert info["tables"]["questions"] == 0 and info["schema_version"] >= 1


def test_db_info_without_database_creates_nothing(tmp_path, capsys):
    db = tmp_path / "none" / "x.duckdb"
    (tmp_path / "magv.toml").write_text(f'database = "{db}"\n')
    assert main(["db", "info", "--json"]) == 0
    info = json.loads(capsys.readouterr().out)
    assert info["exists"] is False
    assert not db.exists() and not db.parent.exists()


def test_bad_config_exits_2_and_writes_nothing(tmp_path, capsys):
    cfg = tmp_path / "magv.toml"
    cfg.write_text('database = "out.duckdb"\nnope = 1\n')
    assert main(["db", "info"]) == 2
    err = capsys.readouterr().err
    assert "magv.toml" in err and "nope" in err
    assert not (tmp_path / "out.duckdb").exists()


def test_database_path_under_a_file_exits_2(tmp_path, capsys):
    (tmp_path / "afile").write_text("x")
    (tmp_path / "magv.toml").write_text(f'database = "{tmp_path}/afile/sub/x.duckdb"\n')
    assert main(["db", "backup", str(tmp_path / "b.duckdb")]) == 2
    err = capsys.readouterr().err
    assert "database" in err and "afile" in err


def test_usage_error_exits_2(capsys):
    assert main(["db", "info", "--no-such-flag"]) == 2


def test_installed_entry_point_runs():
    exe = os.path.join(os.path.dirname(sys.executable), "magv")
    out = subprocess.run([exe, "--help"], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0 and "Usage" in out.stdout


def test_flags_show_no_value_type_in_help(capsys, monkeypatch):
    monkeypatch.setenv("COLUMNS", "100")
    assert main(["export", "--help"]) == 0
    out = capsys.readouterr().out
    assert "--verified-only" in out and "--json" in out
    assert "<bool>" not in out
    assert "<float>" in out  # options that take a value still say what they take


def test_global_database_option(tmp_path, capsys):
    db = tmp_path / "chosen.duckdb"
    (tmp_path / "magv.toml").write_text(f'database = "{tmp_path / "other.duckdb"}"\n')
    assert main(["--database", str(db), "db", "info", "--json"]) == 0
    info = json.loads(capsys.readouterr().out)
    assert info["database"] == str(db)


def test_tables_never_cut_identifiers_at_80_columns(monkeypatch):
    from rich.console import Console

    from magv.commands import common

    narrow = Console(width=80, record=True, file=open(os.devnull, "w"))  # noqa: SIM115
    monkeypatch.setattr(common, "console", narrow)
    long_name = "modify_pending_order_items_and_payment"
    common.table("tools", [{"tool": long_name, "run_id": "a05d1ec589c0baab4f21",
                            "description": "a long description " * 6}])  # fmt: skip
    text = narrow.export_text()
    assert long_name in text and "a05d1ec589c0baab4f21" in text and "…" not in text
    assert all(len(line) <= 80 for line in text.splitlines())


def test_demo_runs_the_demo_domain_with_its_defaults_under_the_given_arguments(monkeypatch):
    from magv.commands import demo

    seen: list[list[str]] = []
    monkeypatch.setattr(demo, "main", seen.append)
    for key in ("MAGV_PIPELINE__MAX_STEPS", "MAGV_LLM__TEMPERATURE"):  # recorded, so teardown removes them
        monkeypatch.setenv(key, "")
        monkeypatch.delenv(key)
    assert main(["demo"]) == 0
    assert seen[-1] == ["--domain", demo.DEMO_DOMAIN, *demo.DEFAULT_ARGS]
    assert os.environ["MAGV_PIPELINE__MAX_STEPS"] == "3"  # the long seeds are wrong by construction
    monkeypatch.delenv("MAGV_PIPELINE__MAX_STEPS")
    # Given arguments win; the demo's own sizes fill in the rest (an --agent alone keeps the demo small).
    sizes = ["--targets", "4", "--per-target", "2", "--questions", "4", "--alternates", "1"]
    assert main(["demo", "--runs", "3"]) == 0
    assert seen[-1] == ["--domain", demo.DEMO_DOMAIN, "--runs", "3", *sizes]
    assert main(["demo", "--domain", "retail", "--runs=3"]) == 0
    assert seen[-1] == ["--domain", "retail", "--runs=3", *sizes]
    assert main(["demo", "--agent", "examples/openai_loop.py:agent"]) == 0
    assert seen[-1] == ["--domain", demo.DEMO_DOMAIN, "--agent", "examples/openai_loop.py:agent",
                        *demo.DEFAULT_ARGS]  # fmt: skip
