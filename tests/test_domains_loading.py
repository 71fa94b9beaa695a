"""Loading domains: user folders (domain.toml / domain.py), modules, and bad input with file and line."""

from __future__ import annotations

import json
import shutil
import textwrap
from pathlib import Path

import pytest

from magv.domains import Domain, load_domain
from magv.errors import BadInput
from magv.models import ToolCall
from tests.domains_helpers import USER_DOMAIN

SEED = '{"question": "Books by Le Guin?", "trajectory": [{"name": "search_books", "arguments": {"query": "le guin"}}]}'


@pytest.fixture
def user_copy(tmp_path) -> Path:
    folder = tmp_path / "user_domain"
    shutil.copytree(USER_DOMAIN, folder)
    return folder


def test_user_domain_from_a_folder_in_fixtures(tmp_path):
    domain = load_domain(str(USER_DOMAIN))
    assert domain.name == "library" and "lending library" in domain.system_prompt
    assert [t.name for t in domain.tools] == [
        "find_member_by_email",
        "search_books",
        "list_member_loans",
        "renew_loan",
    ]
    assert domain.tool("renew_loan").writes and not domain.tool("search_books").writes
    assert domain.tool("nope") is None
    seeds = domain.seeds()
    assert [s.id for s in seeds] == ["library-renew", "library-line2", "library-due"]
    assert domain.seed_line("library-due") == 3
    with domain.sandbox_pool(tmp_path / "data") as pool:
        assert set(pool.tables) == {"books", "loans", "members"}
        before = pool.checksum()
        for seed in seeds:
            steps = pool.run(seed.trajectory)
            assert all(s.ok and s.result for s in steps), [s.error for s in steps]
        with pool.session() as s:
            renewed = s.execute(ToolCall(name="renew_loan", arguments={"loan_id": "L100"}))
            assert renewed.result == {"loan_id": "L100", "due": "2024-07-13", "renewed": True}
            # The view over loans sees the run's own write.
            loans = s.execute(ToolCall(name="list_member_loans", arguments={"member_id": "M001"})).result
            assert {row["loan_id"]: row["renewed"] for row in loans} == {"L100": True, "L101": True}
            again = s.execute(ToolCall(name="renew_loan", arguments={"loan_id": "L100"}))
            assert again.error == "tool_error: loan L100 does not exist or was already renewed"
            bad = s.execute(ToolCall(name="list_member_loans", arguments={"member_id": "x' OR 1=1"}))
            assert bad.error.startswith("invalid_arguments: list_member_loans: member_id: ")
        assert pool.checksum() == before
    assert load_domain(str(USER_DOMAIN / "domain.toml")).name == "library"


def test_changed_data_files_rebuild_the_database(user_copy, tmp_path):
    data = tmp_path / "data"
    first = load_domain(str(user_copy))
    path = first.ensure_built(data)
    assert first.ensure_built(data) == path and first.built_with(data)["data_version"] == first.data_version
    with (user_copy / "data" / "books.csv").open("a") as f:
        f.write("B05,Kindred,Octavia E. Butler,1979,1\n")
    second = load_domain(str(user_copy))
    assert second.data_version != first.data_version
    with second.sandbox_pool(data) as pool:
        assert pool.table_counts()["books"] == 5


def test_domain_py_folder_with_get_domain(tmp_path):
    folder = tmp_path / "mini"
    folder.mkdir()
    (folder / "seeds.jsonl").write_text(
        '{"question": "How many?", "trajectory": [{"name": "count_rows", "arguments": {}}]}\n'
    )
    (folder / "domain.py").write_text(
        textwrap.dedent(
            """
            from pathlib import Path
            from magv.domains import Domain, tool

            @tool("Count the rows.")
            def count_rows(db):
                return {"rows": db.execute("SELECT count(*) FROM t").fetchone()[0]}

            def generate(db, seed):
                db.execute("CREATE TABLE t AS SELECT * FROM range(?)", [7 + seed])

            def get_domain():
                return Domain("mini", system_prompt="Count things.", tools=[count_rows], generate=generate,
                              seeds_path=Path(__file__).parent / "seeds.jsonl")
            """
        )
    )
    domain = load_domain(str(folder))
    assert isinstance(domain, Domain) and domain.name == "mini"
    with domain.sandbox_pool(tmp_path / "data") as pool:
        assert pool.run(domain.seeds()[0].trajectory)[0].result == {"rows": 7}


def test_module_built_from_parts_and_missing_parts_are_listed(tmp_path, monkeypatch):
    monkeypatch.syspath_prepend(str(tmp_path))
    (tmp_path / "partsdomain.py").write_text(
        textwrap.dedent(
            """
            from magv.domains import tool
            NAME = "parts"
            SYSTEM_PROMPT = "Answer questions."

            @tool("Say hello.")
            def hello(db):
                return "hello"

            TOOLS = [hello]

            def generate(db, seed):
                db.execute("CREATE TABLE x (a INTEGER)")
            """
        )
    )
    (tmp_path / "seeds.jsonl").write_text('{"question": "Hi?", "trajectory": [{"name": "hello"}]}\n')
    (tmp_path / "halfdomain.py").write_text('NAME = "half"\nSYSTEM_PROMPT = "x"\n')
    parts = load_domain("partsdomain")
    assert parts.name == "parts" and parts.seeds()[0].trajectory[0].name == "hello"
    with pytest.raises(BadInput) as err:
        load_domain("halfdomain")
    assert str(err.value).startswith(
        "halfdomain: not a magv domain; define DOMAIN = Domain(...) or get_domain()"
    )
    assert str(err.value).endswith("missing: TOOLS, generate")


def test_folders_missing_parts_are_listed(tmp_path, user_copy):
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(
        BadInput, match=r"empty: not a domain; missing: domain.toml or domain.py, seeds.jsonl"
    ):
        load_domain(str(empty))
    (user_copy / "domain.toml").write_text('name = "library"\n')
    (user_copy / "seeds.jsonl").unlink()
    with pytest.raises(BadInput) as err:
        load_domain(str(user_copy))
    assert str(err.value) == (
        f"{user_copy / 'domain.toml'}: not a complete domain; missing: system_prompt (or system_prompt_file), "
        "[[tools]], seed file seeds.jsonl"
    )


def test_sql_tool_with_undeclared_parameter_is_rejected(user_copy):
    toml = user_copy / "domain.toml"
    toml.write_text(toml.read_text().replace("lower($email)", "lower($mail)"))
    with pytest.raises(
        BadInput,
        match=r"tools\[1\] \(find_member_by_email\): sql uses \$mail but parameters does not declare it",
    ):
        load_domain(str(user_copy))


def test_unknown_spec_is_bad_input():
    with pytest.raises(
        BadInput, match="not a built-in \\(retail, logs\\), not a folder, and no module of that name"
    ):
        load_domain("no_such_domain_module")
    with pytest.raises(BadInput, match="no such folder"):
        load_domain("./missing/folder")


@pytest.mark.parametrize(
    ("lines", "line", "reason"),
    [
        (
            [SEED, "{not json"],
            2,
            "not valid JSON: Expecting property name enclosed in double quotes (column 2)",
        ),
        (
            [SEED, '{"question": "q", "trajectory": [{"name": "burn_books", "arguments": {}}]}'],
            2,
            "trajectory[1]: unknown tool 'burn_books'; this domain has find_member_by_email, list_member_loans, renew_loan, search_books",
        ),
        (
            ['{"question": "q", "trajectory": [{"name": "renew_loan", "arguments": {"loan_id": "X1"}}]}'],
            1,
            "trajectory[1]: renew_loan: arguments do not match the tool's schema: loan_id: 'X1' does not match '^L[0-9]{3}$'",
        ),
        (
            ['{"question": "q", "trajectory": [{"name": "search_books", "arguments": {}}]}'],
            1,
            "trajectory[1]: search_books: arguments do not match the tool's schema: 'query' is a required property",
        ),
        (
            [SEED, "", '{"question": "q", "trajectory": []}'],
            3,
            "'trajectory' must be a non-empty list of tool calls",
        ),
        (['{"question": "  ", "trajectory": []}'], 1, "'question' must be a non-empty string"),
        (
            [SEED, '{"question": "q", "trajectory": [], "extra": 1}'],
            2,
            "unknown field(s) extra; expected acceptable, id, notes, question, trajectory",
        ),
        (
            ['{"id": "a", ' + SEED[1:], '{"id": "a", ' + SEED[1:]],
            2,
            "duplicate seed id 'a' (first on line 1)",
        ),
        (
            [SEED, json.dumps({"question": "x" * 70000, "trajectory": []})],
            2,
            "line is 70034 bytes; a seed line may be at most 65536",
        ),
    ],  # fmt: skip
)
def test_bad_seed_lines_name_file_and_line(user_copy, lines, line, reason):
    seeds = user_copy / "seeds.jsonl"
    seeds.write_text("\n".join(lines) + "\n")
    with pytest.raises(BadInput) as err:
        load_domain(str(user_copy)).seeds()
    assert str(err.value) == f"{seeds}:{line}: {reason}"


def test_empty_seed_file(user_copy):
    seeds = user_copy / "seeds.jsonl"
    seeds.write_text("\n\n")
    with pytest.raises(BadInput, match=r"seeds.jsonl: seed file is empty; expected one JSON object per line"):
        load_domain(str(user_copy)).seeds()
