"""Bad input through the `magv` command: one clear message naming the file, line or field, exit
code 2, and not a row written. Every case runs against a database that already holds data (an
import and a pipeline run), whose row counts, table by table, must not move.

The modules of each area test their parsers; this suite is about what a user sees and keeps.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from magv.cli import main
from magv.store import Store
from magv.verify.importer import import_trajectories
from tests.reliability_helpers import read_counts

FIXTURES = Path(__file__).resolve().parent / "fixtures"
USER_DOMAIN = FIXTURES / "user_domain"
SMALL = ["--targets", "1", "--per-target", "1", "--questions", "1", "--runs", "1", "--alternates", "0"]


@pytest.fixture(scope="module")
def filled_db(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("filled") / "magv.duckdb"
    with Store(path) as store:
        import_trajectories(store, FIXTURES / "import_multiturn.jsonl")
        store.start_pipeline_run("earlier", "imported", {"kind": "import"})
        store.con.execute("CHECKPOINT")
    return path


@pytest.fixture
def env(tmp_path, filled_db, monkeypatch) -> Path:
    """A copy of the filled database; settings point at it and at an endpoint never reached."""
    db = tmp_path / "data" / "magv.duckdb"
    db.parent.mkdir()
    shutil.copyfile(filled_db, db)
    monkeypatch.setenv("MAGV_DATABASE", str(db))
    monkeypatch.setenv("MAGV_DOMAIN_DATA_DIR", str(tmp_path / "domains"))
    monkeypatch.setenv("MAGV_LLM__ENDPOINTS", '["http://127.0.0.1:9/v1"]')
    return db


def _domain_copy(tmp: Path, seeds: str | bytes | None = None) -> Path:
    folder = tmp / "library"
    shutil.copytree(USER_DOMAIN, folder)
    if seeds is not None:
        path = folder / "seeds.jsonl"
        path.write_bytes(seeds if isinstance(seeds, bytes) else seeds.encode())
    return folder


def _seed_lines(*replace: tuple[int, str]) -> str:
    lines = (USER_DOMAIN / "seeds.jsonl").read_text().splitlines()
    for number, text in replace:
        lines[number - 1] = text
    return "\n".join(lines) + "\n"


def _import_file(
    tmp: Path, *edits: Callable[[list[dict]], None], raw_line: tuple[int, str] | None = None
) -> Path:
    lines = [json.loads(x) for x in (FIXTURES / "import_multiturn.jsonl").read_text().splitlines()]
    for edit in edits:
        edit(lines)
    text = [json.dumps(x) for x in lines]
    if raw_line:
        text[raw_line[0] - 1] = raw_line[1]
    path = tmp / "incoming.jsonl"
    path.write_text("\n".join(text) + "\n")
    return path


def _set(line: int, *path_and_value):
    *keys, value = path_and_value

    def edit(lines: list[dict]) -> None:
        node = lines[line - 1]
        for k in keys[:-1]:
            node = node[k]
        node[keys[-1]] = value

    return edit


@dataclass
class Case:
    name: str
    argv: Callable[[Path], list[str]]  # given tmp_path: sets up the bad input, returns the command
    expected: list[str]  # all in the message (with {tmp} for the test's directory)
    environment: dict[str, str] = field(default_factory=dict)  # set for the command ({tmp} as above)
    code: int = 2  # 1 for input that is well formed but cannot be used (RunFailed)


def _toml(text: str) -> Callable[[Path], list[str]]:
    def setup(tmp: Path) -> list[str]:
        (tmp / "magv.toml").write_text(text)
        return ["run", *SMALL]

    return setup


def _seeds(seeds: str | bytes) -> Callable[[Path], list[str]]:
    return lambda tmp: ["run", "--domain", str(_domain_copy(tmp, seeds)), *SMALL]


def _imported(*edits, raw_line=None) -> Callable[[Path], list[str]]:
    return lambda tmp: ["import", "trajectories", str(_import_file(tmp, *edits, raw_line=raw_line))]


def _module_domain(tmp: Path) -> list[str]:
    (tmp / "halfbaddomain.py").write_text('NAME = "half"\nSYSTEM_PROMPT = "You help."\n')
    sys.path.insert(0, str(tmp))  # the test takes it out again
    return ["run", "--domain", "halfbaddomain", *SMALL]


def _toml_domain_without_tools(tmp: Path) -> list[str]:
    folder = _domain_copy(tmp)
    text = (folder / "domain.toml").read_text()
    (folder / "domain.toml").write_text(text.split("[[tools]]")[0])
    return ["run", "--domain", str(folder), *SMALL]


def _folder_without_definition(tmp: Path) -> list[str]:
    folder = _domain_copy(tmp)
    (folder / "domain.toml").unlink()
    return ["run", "--domain", str(folder), *SMALL]


def _domain_py_that_fails(tmp: Path) -> list[str]:
    folder = tmp / "broken"
    folder.mkdir()
    (folder / "domain.py").write_text(
        "import magv\nraise RuntimeError('the data generator needs a licence key')\n"
    )
    return ["run", "--domain", str(folder), *SMALL]


def _existing_backup(tmp: Path) -> list[str]:
    (tmp / "taken.duckdb").write_text("")
    return ["db", "backup", str(tmp / "taken.duckdb")]


def _env(name: str, value: str, argv: list[str], expected: list[str], label: str = "") -> Case:
    return Case(f"env {name}{label}", lambda tmp: list(argv), expected, environment={name: value})


def _special(kind: str) -> Callable[[Path], list[str]]:
    """An import whose file is a directory, a FIFO or standard input."""

    def setup(tmp: Path) -> list[str]:
        if kind == "fifo":
            os.mkfifo(tmp / "pipe.jsonl")
            return ["import", "trajectories", str(tmp / "pipe.jsonl")]
        if kind == "directory":
            (tmp / "folder.jsonl").mkdir()
            return ["import", "trajectories", str(tmp / "folder.jsonl")]
        return ["import", "trajectories", "/dev/stdin"]

    return setup


def _label_from(kind: str) -> Callable[[Path], list[str]]:
    def setup(tmp: Path) -> list[str]:
        path = tmp / "labels.jsonl"
        if kind == "fifo":
            os.mkfifo(path)
        else:
            path.mkdir()
        return ["verify", "label", "--from", str(path)]

    return setup


def _existing_export(tmp: Path) -> list[str]:
    (tmp / "out.jsonl").write_text("earlier export\n")
    return ["export", "--out", str(tmp / "out.jsonl")]


def _export_to_directory(tmp: Path) -> list[str]:
    (tmp / "outdir").mkdir()
    return ["export", "--out", str(tmp / "outdir")]


def _models_dir_is_a_file(tmp: Path) -> list[str]:
    (tmp / "models").write_text("not a folder")
    return ["verify", "train"]


def _damaged_database(tmp: Path) -> list[str]:
    (tmp / "damaged.duckdb").write_bytes(b"DUCK" * 2000)
    return ["db", "info"]


def _database_is_a_directory(tmp: Path) -> list[str]:
    (tmp / "dbdir").mkdir()
    return ["import", "trajectories", str(FIXTURES / "import_multiturn.jsonl")]


def _imported_text(text: str | bytes) -> Callable[[Path], list[str]]:
    def setup(tmp: Path) -> list[str]:
        path = tmp / "incoming.jsonl"
        path.write_bytes(text if isinstance(text, bytes) else text.encode())
        return ["import", "trajectories", str(path)]

    return setup


ARGS_1 = ("messages", 2, "tool_calls", 0, "function", "arguments")
RESULT_1 = ("messages", 3, "content")
DEEP = "[" * 100_000 + "]" * 100_000
DEEP_SEED = "[" * 30_000 + "]" * 30_000  # seed lines stop at 64 KiB
GOOD_CALL = '{"name": "search_books", "arguments": {"query": "le guin"}}'
CASES = [
    # -- settings
    Case("toml not TOML", _toml('database = "x\n'), ["magv.toml: not valid TOML", "(at line 1, column 14)"]),
    Case("toml unknown setting", _toml("[pipeline]\nrunz = 3\n"), ["magv.toml: pipeline.runz: unknown setting"]),
    Case("toml out of range", _toml("[pipeline]\nruns = 0\n"),
         ["magv.toml: pipeline.runs: Input should be greater than or equal to 1 (got 0)"]),
    Case("toml wrong type", _toml('[llm]\ntimeout_s = "soon"\n'), ["magv.toml: llm.timeout_s: Input should be a valid number", "(got 'soon')"]),
    Case("toml unknown role", _toml("[llm.roles.writer]\nmodel = 'x'\n"),
         ["magv.toml: llm.roles.writer: unknown role; expected one of investigator"]),
    Case("config file missing", lambda tmp: ["--config", str(tmp / "nope.toml"), "run", *SMALL],
         ["{tmp}/nope.toml: config file not found"]),
    Case("runner unknown", lambda tmp: ["run", "--runner", "spark", *SMALL],
         ["pipeline.runner:", "'local', 'dask' or 'ray'", "(got 'spark')"]),
    # -- seed files
    Case("seed line not JSON", _seeds(_seed_lines((2, '{"question": "Any Le Guin?", "trajectory": ['))),
         ["{tmp}/library/seeds.jsonl:2: not valid JSON"]),
    Case("seed unknown tool", _seeds(_seed_lines((3, '{"question": "Fly me", "trajectory": [{"name": "fly"}]}'))),
         ["{tmp}/library/seeds.jsonl:3: trajectory[1]: unknown tool 'fly'; this domain has find_member_by_email"]),
    Case("seed arguments against schema",
         _seeds(_seed_lines((1, '{"question": "My loans?", "trajectory": [' + GOOD_CALL +
                             ', {"name": "list_member_loans", "arguments": {"member_id": "X9"}}]}'))),
         ["{tmp}/library/seeds.jsonl:1: trajectory[2]: list_member_loans: arguments do not match the tool's schema:",
          "member_id: 'X9' does not match"]),
    Case("seed arguments of a wrong type",
         _seeds(_seed_lines((2, '{"question": "Books?", "trajectory": [{"name": "search_books", "arguments": {"query": 7}}]}'))),
         ["{tmp}/library/seeds.jsonl:2: trajectory[1]: search_books:", "7 is not of type 'string'"]),
    Case("seed file empty", _seeds("\n\n"), ["{tmp}/library/seeds.jsonl: seed file is empty"]),
    Case("seed line huge", _seeds(_seed_lines((2, '{"question": "' + "a" * 70_000 + '", "trajectory": [' + GOOD_CALL + "]}"))),
         ["{tmp}/library/seeds.jsonl:2: line is 70", "bytes; a seed line may be at most 65536"]),
    Case("seed not UTF-8", _seeds(b'{"question": "caf\xe9?", "trajectory": []}\n'), ["{tmp}/library/seeds.jsonl:1: not UTF-8"]),
    Case("seed duplicate id", _seeds(_seed_lines((3, (USER_DOMAIN / "seeds.jsonl").read_text().splitlines()[0]))),
         ["{tmp}/library/seeds.jsonl:3: duplicate seed id 'library-renew' (first on line 1)"]),
    # -- domains missing parts
    Case("module domain missing parts", _module_domain,
         ["halfbaddomain: not a magv domain", "missing: TOOLS, generate, SEEDS"]),
    Case("toml domain without tools", _toml_domain_without_tools,
         ["{tmp}/library/domain.toml: not a complete domain; missing: [[tools]]"]),
    Case("folder that is no domain", _folder_without_definition,
         ["domain folder {tmp}/library: not a domain; missing: domain.toml or domain.py"]),
    Case("domain.py that fails", _domain_py_that_fails,
         ["{tmp}/broken/domain.py: failed to import: RuntimeError: the data generator needs a licence key"]),
    Case("domain unknown", lambda tmp: ["run", "--domain", "no_such_domain_pkg", *SMALL],
         ["domain 'no_such_domain_pkg': not a built-in (retail, logs), not a folder, and no module"]),
    # -- import files
    Case("import broken line", _imported(raw_line=(3, '{"question_id": "conv-2", "question": ')),
         ["{tmp}/incoming.jsonl:3: not valid JSON"]),
    Case("import role not OpenAI", _imported(_set(2, "messages", 0, "role", "bot")),
         ["{tmp}/incoming.jsonl:2: messages[0].role: expected one of assistant, developer, system, tool, user, got 'bot'"]),
    Case("import arguments not a JSON string",
         _imported(_set(1, "messages", 2, "tool_calls", 0, "function", "arguments", {"order_id": "1042"})),
         ["{tmp}/incoming.jsonl:1: messages[2].tool_calls[0].function.arguments: expected a JSON string (OpenAI format), got dict"]),
    Case("import tool_call id that matches no call", _imported(_set(4, "messages", 3, "tool_call_id", "c9z")),
         ["{tmp}/incoming.jsonl:4: messages[3].tool_call_id: 'c9z' does not match a tool call awaiting its result"]),
    Case("import call without a result under --strict",
         lambda tmp: [*_imported(lambda lines: lines[0]["messages"].pop(3))(tmp), "--strict"],
         ["{tmp}/incoming.jsonl:1:", "never got a tool message", "refused under --strict"]),
    Case("import unknown field", _imported(_set(2, "score", 0.9)),
         ["{tmp}/incoming.jsonl:2: unknown field 'score'; put extra data under \"meta\""]),
    Case("import run index negative", _imported(_set(3, "run", -1)), ["{tmp}/incoming.jsonl:3: run: expected an integer >= 0 and <= 2147483647, got -1"]),
    # -- command-line arguments out of range
    Case("runs 0", lambda tmp: ["run", "--runs", "0"], ["Invalid value for '--runs' / '-R': Input should be greater than or equal to 1"]),
    Case("alternates 21", lambda tmp: ["run", "--alternates", "21"], ["Invalid value for '--alternates' / '-k': Input should be less than or equal to 20"]),
    Case("per-target 0", lambda tmp: ["run", "--per-target", "0"], ["Invalid value for '--per-target' / '-n': Input should be greater than or equal to 1"]),
    Case("questions 0", lambda tmp: ["run", "--questions", "0"], ["Invalid value for '--questions' / '-q': Input should be greater than or equal to 1"]),
    Case("targets not a number", lambda tmp: ["run", "--targets", "many"], ["Invalid value for '--targets': Input should be a valid integer"]),
    Case("alternate runs 0", lambda tmp: ["reverse", "--alternate-runs", "0"], ["Invalid value for '--alternate-runs': Input should be greater than or equal to 1"]),
    Case("train folds 1", lambda tmp: ["verify", "train", "--folds", "1"], ["Invalid value for '--folds': Input should be greater than or equal to 2"]),
    Case("backup over a file", _existing_backup, ["backup: {tmp}/taken.duckdb already exists; choose a new path"]),
    # -- environment variables
    _env("MAGV_DATABSE", "x.duckdb", ["run", *SMALL], ["environment variable MAGV_DATABSE: unknown setting; expected one of MAGV_DATABASE"]),
    _env("MAGV_PIPELINE__RUNZ", "3", ["run", *SMALL], ["environment variable MAGV_PIPELINE__RUNZ: pipeline.runz: unknown setting"]),
    _env("MAGV_LLM__ENDPOINTS", "http://gpu1:8000/v1", ["run", *SMALL],
         ["environment variable MAGV_LLM__ENDPOINTS: not valid JSON ('http://gpu1:8000/v1')", """MAGV_LLM__ENDPOINTS='["http://gpu1:8000/v1"]'"""]),
    _env("MAGV_LLM__ENDPOINTS", '"http://gpu1:8000/v1"', ["run", *SMALL],
         ["environment variable MAGV_LLM__ENDPOINTS: llm.endpoints: Input should be a valid list"], " as a JSON string"),
    _env("MAGV_PIPELINE__RUNS", "99999999999999999999", ["run", *SMALL],
         ["environment variable MAGV_PIPELINE__RUNS: pipeline.runs: Input should be less than or equal to 50"]),
    _env("MAGV_PIPELINE__SEED", "12345678901234567890", ["verify", "train"],
         ["pipeline.seed: expected an integer from 0 to 4294967295 for training, got 12345678901234567890"]),
    Case("toml embeddings endpoint as a list", _toml('[embeddings]\nendpoint = ["http://gpu1:8000/v1"]\n'),
         ["magv.toml: embeddings.endpoint: Input should be a valid string"]),
    Case("toml role endpoint as a plain URL", _toml('[llm.roles.judge]\nendpoints = "http://gpu1:8000/v1"\n'),
         ["magv.toml: llm.roles.judge.endpoints: Input should be a valid list"]),
    Case("toml threshold NaN", _toml("[verify]\nthreshold = nan\n"), ["magv.toml: verify.threshold:"]),
    # -- seed lines that JSON or the store cannot hold
    Case("seed lone surrogate", _seeds(_seed_lines((2, '{"question": "Books by \\ud800?", "trajectory": [' + GOOD_CALL + "]}"))),
         ["{tmp}/library/seeds.jsonl:2: question: text holds a lone surrogate"]),
    Case("seed nested 30000 deep", _seeds(_seed_lines((2, DEEP_SEED))), ["{tmp}/library/seeds.jsonl:2: JSON nested too deeply"]),
    Case("seed NaN argument",
         _seeds(_seed_lines((2, '{"question": "Books?", "trajectory": [{"name": "search_books", "arguments": {"query": NaN}}]}'))),
         ["{tmp}/library/seeds.jsonl:2: trajectory[0].arguments.query: NaN is not valid JSON"]),
    Case("seed 20-digit integer",
         _seeds(_seed_lines((2, '{"question": "Books?", "trajectory": [{"name": "search_books", "arguments": {"query": 12345678901234567890}}]}'))),
         ["{tmp}/library/seeds.jsonl:2: trajectory[0].arguments.query: integer 12345678901234567890 is out of range"]),
    # -- import lines that JSON or the store cannot hold
    Case("import lone surrogate in the question", _imported(_set(2, "question", "Where is \ud800?")),
         ["{tmp}/incoming.jsonl:2: question: text holds a lone surrogate"]),
    Case("import lone surrogate in a key", _imported(_set(2, "meta", {"\udc00": 1})),
         ["{tmp}/incoming.jsonl:2: meta.\\udc00: the key holds a lone surrogate"]),
    Case("import lone surrogate in a tool result", _imported(_set(1, *RESULT_1, '{"city": "\\ud83d"}')),
         ["{tmp}/incoming.jsonl:1: messages[3].content: city: text holds a lone surrogate"]),
    Case("import nested 100000 deep", _imported(raw_line=(3, DEEP)), ["{tmp}/incoming.jsonl:3: JSON nested too deeply"]),
    Case("import nested 100000 deep in arguments", _imported(_set(1, *ARGS_1, DEEP)),
         ["{tmp}/incoming.jsonl:1: messages[2].tool_calls[0].function.arguments: JSON nested too deeply"]),
    Case("import NaN in tool arguments", _imported(_set(1, *ARGS_1, '{"order_id": NaN}')),
         ["{tmp}/incoming.jsonl:1: messages[2].tool_calls[0].function.arguments: order_id: NaN is not valid JSON"]),
    Case("import Infinity in a tool result", _imported(_set(4, *RESULT_1, '{"cancelled": Infinity}')),
         ["{tmp}/incoming.jsonl:4: messages[3].content: cancelled: Infinity is not valid JSON"]),
    Case("import NaN in meta", _imported(_set(2, "meta", {"score": float("nan")})),
         ["{tmp}/incoming.jsonl:2: meta.score: NaN is not valid JSON"]),
    Case("import 1e400 in meta", _imported(raw_line=(2, '{"question_id": "q", "question": "x", "run": 0, "messages": [], "meta": {"latency_s": 1e400}}')),
         ["{tmp}/incoming.jsonl:2: meta.latency_s: inf is not valid JSON"]),
    Case("import latency 1e300", _imported(_set(2, "meta", {"latency_s": 1e300})),
         ["{tmp}/incoming.jsonl:2: meta.latency_s: expected seconds from 0 to 1e+07, got 1e+300"]),
    Case("import latency negative", _imported(_set(2, "meta", {"latency_s": -1.5})),
         ["{tmp}/incoming.jsonl:2: meta.latency_s: expected seconds from 0 to 1e+07, got -1.5"]),
    Case("import prompt tokens beyond INT32", _imported(_set(2, "meta", {"prompt_tokens": 2**31})),
         ["{tmp}/incoming.jsonl:2: meta.prompt_tokens: expected an integer from 0 to 2147483647, got 2147483648"]),
    Case("import completion tokens beyond INT64", _imported(_set(2, "meta", {"completion_tokens": 2**64})),
         ["{tmp}/incoming.jsonl:2: meta.completion_tokens: integer 18446744073709551616 is out of range"]),
    Case("import prompt tokens 1e300", _imported(_set(2, "meta", {"prompt_tokens": 1e300})),
         ["{tmp}/incoming.jsonl:2: meta.prompt_tokens: expected an integer from 0 to 2147483647, got 1e+300"]),
    Case("import prompt tokens negative", _imported(_set(2, "meta", {"prompt_tokens": -5})),
         ["{tmp}/incoming.jsonl:2: meta.prompt_tokens: expected an integer from 0 to 2147483647, got -5"]),
    Case("import run beyond INT32", _imported(_set(3, "run", 2**31)),
         ["{tmp}/incoming.jsonl:3: run: expected an integer >= 0 and <= 2147483647, got 2147483648"]),
    Case("import run of 20 digits", _imported(_set(3, "run", 12345678901234567890)),
         ["{tmp}/incoming.jsonl:3: run: integer 12345678901234567890 is out of range"]),
    Case("import run of 5000 digits", _imported(raw_line=(3, '{"run": ' + "7" * 5000 + "}")),
         ["{tmp}/incoming.jsonl:3: not valid JSON: Exceeds the limit"]),
    Case("import run as a float", _imported(_set(3, "run", 1.5)), ["{tmp}/incoming.jsonl:3: run: expected an integer >= 0"]),
    Case("import meta not an object", _imported(_set(2, "meta", [1, 2])), ["{tmp}/incoming.jsonl:2: meta: expected an object"]),
    Case("import label not a boolean", _imported(_set(2, "label", "yes")),
         ["{tmp}/incoming.jsonl:2: label: expected true, false or null, got 'yes'"]),
    Case("import empty question id", _imported(_set(2, "question_id", " ")),
         ["{tmp}/incoming.jsonl:2: question_id: expected a non-empty string"]),
    Case("import file empty", _imported_text("\n\n"), ["{tmp}/incoming.jsonl: no trajectories in the file"]),
    Case("import file not UTF-8", _imported_text(b'{"question": "caf\xe9"}\n'), ["{tmp}/incoming.jsonl: cannot read as UTF-8 text"]),
    Case("import file missing", lambda tmp: ["import", "trajectories", str(tmp / "nope.jsonl")], ["{tmp}/nope.jsonl: no such file"]),
    Case("import file is a directory", _special("directory"), ["{tmp}/folder.jsonl: is a directory; expected a JSONL input file"]),
    Case("import file is a FIFO", _special("fifo"), ["{tmp}/pipe.jsonl: is a FIFO (pipe); expected a regular JSONL input file"]),
    Case("import file is stdin", _special("stdin"), ["/dev/stdin: is", "expected a regular JSONL input file"]),
    Case("label file is a FIFO", _label_from("fifo"), ["{tmp}/labels.jsonl: is a FIFO (pipe); expected a regular JSONL label file"]),
    Case("label file is a directory", _label_from("directory"), ["{tmp}/labels.jsonl: is a directory; expected a JSONL label file"]),
    # -- command-line integers and paths
    Case("train seed -1", lambda tmp: ["verify", "train", "--seed", "-1"], ["Invalid value for '--seed': Input should be greater than or equal to 0"]),
    Case("train seed of 20 digits", lambda tmp: ["verify", "train", "--seed", "12345678901234567890"],
         ["Invalid value for '--seed': Input should be less than or equal to 4294967295"]),
    Case("domain build seed -1", lambda tmp: ["domain", "build", "retail", "--seed", "-1"],
         ["Invalid value for '--seed': Input should be greater than or equal to 0"]),
    Case("eval seed of 20 digits", lambda tmp: ["eval", "--seed", "99999999999999999999"],
         ["Invalid value for '--seed': Input should be less than or equal to 4294967295"]),
    Case("export over a file", _existing_export, ["export: {tmp}/out.jsonl already exists; choose a new path or pass --force"]),
    Case("export to a directory", _export_to_directory, ["export: {tmp}/outdir is a directory; give a file path with --out"]),
    Case("models_dir is a file", _models_dir_is_a_file,
         ["verify.models_dir: {tmp}/models is not a directory; expected a folder for model files"],
         environment={"MAGV_VERIFY__MODELS_DIR": "{tmp}/models"}),
    Case("models_dir under a file", _models_dir_is_a_file,
         ["verify.models_dir: {tmp}/models is a file, so {tmp}/models/v1 cannot be created"],
         environment={"MAGV_VERIFY__MODELS_DIR": "{tmp}/models/v1"}),
    Case("damaged database file", _damaged_database, ["database: {tmp}/damaged.duckdb:"],
         environment={"MAGV_DATABASE": "{tmp}/damaged.duckdb"}),
    Case("score without a database", lambda tmp: ["verify", "score"],
         ["database: {tmp}/none.duckdb does not exist; run the pipeline (`magv run`) or import trajectories"],
         environment={"MAGV_DATABASE": "{tmp}/none.duckdb"}),
    Case("train without a database", lambda tmp: ["verify", "train"], ["database: {tmp}/none.duckdb does not exist"],
         environment={"MAGV_DATABASE": "{tmp}/none.duckdb"}),
    Case("database path is a directory", _database_is_a_directory, ["database: {tmp}/dbdir is a directory; expected the path of a DuckDB file"],
         environment={"MAGV_DATABASE": "{tmp}/dbdir"}),
]  # fmt: skip


@pytest.mark.parametrize("case", CASES, ids=[c.name for c in CASES])
def test_bad_input_exits_2_with_one_clear_message_and_writes_nothing(
    case, env, tmp_path, capsys, monkeypatch
):
    before = read_counts(env)
    path = list(sys.path)
    for name, value in case.environment.items():
        monkeypatch.setenv(name, value.format(tmp=tmp_path))
    files = {p.name for p in env.parent.iterdir()}
    argv = case.argv(tmp_path)
    capsys.readouterr()
    try:
        code = main(argv)
    finally:
        sys.path[:] = path
    out, err = capsys.readouterr()
    message = " ".join(err.split())  # rich wraps long lines
    assert code == case.code, (out, err)
    for text in case.expected:
        assert text.format(tmp=tmp_path) in message, message
    assert "Traceback" not in err
    assert len(re.findall(r"(?:^|\s)(?:magv: error|Error):", message)) == 1
    assert read_counts(env) == before
    # Nothing new beside the database either (no second database, no half-written export).
    assert {p.name for p in env.parent.iterdir()} == files


def test_the_suite_covers_every_kind_of_bad_input():
    """A reminder to keep the suite whole: the kinds the reliability issue names, and how many."""
    groups = {"toml": 0, "config": 0, "runner": 0, "seed": 0, "domain": 0, "import": 0, "backup": 0}
    for case in CASES:
        for prefix in groups:
            if prefix in case.name:
                groups[prefix] += 1
    assert groups["seed"] >= 5 and groups["domain"] >= 4 and groups["import"] >= 5 and groups["toml"] >= 4
    assert len(CASES) >= 80
