"""`magv domain …` through the real CLI entry point (in-process: `magv.cli.main`)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from magv.cli import main
from tests.domains_helpers import USER_DOMAIN


@pytest.mark.parametrize("name", ["retail", "logs"])
def test_check_builtin_passes_from_scratch(name, capsys):
    assert main(["domain", "check", name]) == 0
    out = capsys.readouterr().out
    assert f"ok: every gold trajectory of {name} ran without error" in out
    assert Path("data/domains", f"{name}.duckdb").is_file()  # built on demand in the default data dir


def test_check_json_reports_every_seed(capsys):
    assert main(["domain", "check", str(USER_DOMAIN), "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["ok"] is True and report["domain"] == "library" and report["tools_without_seed"] == []
    assert [(s["id"], s["line"], s["calls"], s["problem"]) for s in report["seeds"]] == [
        ("library-renew", 1, 3, None),
        ("library-line2", 2, 1, None),
        ("library-due", 3, 2, None),
    ]


def test_check_fails_with_the_seed_line_and_reason(tmp_path, capsys):
    folder = tmp_path / "lib"
    shutil.copytree(USER_DOMAIN, folder)
    seeds = folder / "seeds.jsonl"
    bad = '{"id": "ghost", "question": "I am nobody@example.org", "trajectory": [{"name": "find_member_by_email", "arguments": {"email": "nobody@example.org"}}]}'
    seeds.write_text(seeds.read_text() + bad + "\n")
    assert main(["domain", "check", str(folder)]) == 2
    err = " ".join(capsys.readouterr().err.split())
    assert (
        f"{seeds}:4: seed ghost: call 1 find_member_by_email: tool_error: no member with email nobody@example.org"
        in err
    )


def test_check_runs_acceptable_trajectories_and_says_where_it_builds(tmp_path, capsys):
    folder = tmp_path / "lib"
    shutil.copytree(USER_DOMAIN, folder)
    seeds = folder / "seeds.jsonl"
    lines = seeds.read_text().splitlines()
    first = json.loads(lines[0])
    first["acceptable"] = [[{"name": "find_member_by_email", "arguments": {"email": "nobody@example.org"}}]]
    seeds.write_text("\n".join([json.dumps(first), *lines[1:]]) + "\n")
    assert main(["domain", "check", str(folder)]) == 2
    err = " ".join(capsys.readouterr().err.split())
    assert "building the library database at" in err  # the new file is announced
    assert f"{seeds}:1: seed library-renew (acceptable 1): call 1 find_member_by_email: tool_error" in err
    assert main(["domain", "check", str(folder)]) == 2
    assert "building" not in capsys.readouterr().err  # built once, reused


def test_check_bad_seed_file_exits_2(tmp_path, capsys):
    folder = tmp_path / "lib"
    shutil.copytree(USER_DOMAIN, folder)
    (folder / "seeds.jsonl").write_text('{"question": "q", "trajectory": [{"name": "nope"}]}\n')
    assert main(["domain", "check", str(folder)]) == 2
    assert "seeds.jsonl:1: trajectory[1]: unknown tool 'nope'" in " ".join(capsys.readouterr().err.split())


def test_tools_json_is_openai_function_specs(capsys):
    assert main(["domain", "tools", "retail", "--json"]) == 0
    tools = json.loads(capsys.readouterr().out)
    assert len(tools) == 13
    cancel = next(t for t in tools if t["name"] == "cancel_pending_order")
    assert cancel["writes"] is True
    assert cancel["parameters"]["required"] == ["order_id", "reason"]
    assert cancel["parameters"]["additionalProperties"] is False


def test_build_and_list(capsys):
    assert main(["domain", "list", "--json"]) == 0
    listed = json.loads(capsys.readouterr().out)
    assert [(d["name"], d["built"]) for d in listed] == [("retail", False), ("logs", False)]
    assert main(["domain", "build", "logs", "--json"]) == 0
    built = json.loads(capsys.readouterr().out)
    assert built["domain"] == "logs" and Path(built["database"]).is_file()
    assert built["tables"]["events"] > 20000 and built["tables"]["incidents"] == 3
    assert main(["domain", "list", "--json"]) == 0
    assert [d["built"] for d in json.loads(capsys.readouterr().out)] == [False, True]
    assert main(["domain", "build", "nosuchdomain"]) == 2
