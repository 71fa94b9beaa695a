"""The store writer of imported trajectories (production logs, other agents, benchmarks): checked
lines of the interchange format (magv.interchange) become questions, runs, labels and judge
verdicts, with each question's most common trajectory.

Which tool results are errors, and which calls change data, are the log's `tools`
(magv.verify.toolspec); the names of the write tools are kept with each question for the features.
A line's `reference` labels its run by matching (magv.verify.labels) unless the line has a label.
A line whose `meta.origin` is "alternate" is a run of an alternate question of the base question
`meta.parent_question_id` (a question_id or group_id of the file, or one imported before); the
link is restored, an unknown base refused. A line whose `meta.judge_correct` is true or false
gives its run a judge verdict (`meta.judge_model`, else "judge"; its tokens
`meta.judge_prompt_tokens` / `meta.judge_completion_tokens`, 0 when absent), as `magv export`
writes them, so a replay of the cascade counts what the judge cost.

The whole file is checked before anything is written, then everything is written in one
transaction. A run already stored with other content is refused (or, with `replace`, replaced
with its label and everything derived from it), never half merged.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from magv.errors import BadInput
from magv.interchange import ImportLine, kept_entry, read_import_file
from magv.mct import most_common_trajectory
from magv.messages import Notes
from magv.models import JudgeVerdict, Label, Question, Run, canonical_json
from magv.verify.labels import MATCH_MODES, arg_mode, match, match_detail, parse_overrides
from magv.verify.toolspec import LogTools, domain_tools

if TYPE_CHECKING:
    from magv.store import Store

DEFAULT_DOMAIN = "imported"
# Where an imported question keeps the names of the tools of its log that change data.
WRITE_TOOLS_KEY = "write_tools"


@dataclass
class ImportResult:
    lines: int
    questions: int
    runs: int
    labels: int
    mct: int
    skipped_runs: int
    question_ids: dict[str, str]  # the file's question_id (and group_id) -> the store's id
    normalised: dict[str, int] = field(default_factory=dict)
    first_seen: dict[str, str] = field(default_factory=dict)  # normalisation -> "file:line: field"
    replaced_runs: int = 0
    reference_labels: int = 0
    alternates: int = 0  # questions of the file that are alternates of a base question
    judge_verdicts: int = 0  # verdicts restored from `meta.judge_correct`
    tools: dict[str, Any] = field(default_factory=dict)  # LogTools.summary of the file's calls

    def as_dict(self) -> dict[str, Any]:
        return {
            "lines": self.lines,
            "questions": self.questions,
            "runs": self.runs,
            "labels": self.labels,
            "mct": self.mct,
            "skipped_runs": self.skipped_runs,
            "replaced_runs": self.replaced_runs,
            "reference_labels": self.reference_labels,
            "alternates": self.alternates,
            "judge_verdicts": self.judge_verdicts,
            "tools": self.tools,
            "normalised": self.normalised,
            "first_seen": self.first_seen,
        }


def import_trajectories(
    store: Store,
    path: Path,
    domain: str = DEFAULT_DOMAIN,
    *,
    strict: bool = False,
    replace: bool = False,
    match_mode: str = "strict",
    arguments: bool | str = "exact",
    overrides: dict[str, Any] | None = None,
    tools: LogTools | None = None,
) -> ImportResult:
    """Import a file (see the module docstring). `strict` refuses what would be normalised;
    `replace` replaces stored runs whose content differs instead of refusing the file. A line's
    `reference` gives its label by `match` under `match_mode`, `arguments` and `overrides` unless the
    line has a label of its own. `tools` (default: the domain's) say which results are errors and
    which calls write."""
    tools = tools if tools is not None else domain_tools(domain)
    notes = Notes(strict)
    lines = read_import_file(path, notes, tools.errors)
    return import_lines(
        store,
        lines,
        path,
        domain,
        notes=notes,
        replace=replace,
        match_mode=match_mode,
        arguments=arguments,
        overrides=overrides,
        tools=tools,
    )


def import_lines(
    store: Store,
    lines: list[ImportLine],
    path: Path,
    domain: str = DEFAULT_DOMAIN,
    *,
    notes: Notes | None = None,
    replace: bool = False,
    match_mode: str = "strict",
    arguments: bool | str = "exact",
    overrides: dict[str, Any] | None = None,
    tools: LogTools | None = None,
) -> ImportResult:
    """Write checked lines (`check_import_lines`) as `import_trajectories` does; `path` names their
    source in labels, meta and messages. The write tools of `tools` are kept with each question
    (meta.import.write_tools), so its features compare those calls."""
    if not isinstance(domain, str) or not domain.strip():
        raise BadInput(f"domain: expected a name, got {domain!r}")
    if match_mode not in MATCH_MODES:
        raise BadInput(f"match mode {match_mode!r}: expected one of {', '.join(MATCH_MODES)}")
    arg_mode(arguments)
    parse_overrides(overrides)
    notes = notes if notes is not None else Notes()
    by_key: dict[str, list[ImportLine]] = {}
    for item in lines:
        by_key.setdefault(item.key, []).append(item)
    writer = _Writer(store, path, domain, replace, match_mode, arguments, overrides, tools, by_key)
    for key, items in by_key.items():
        writer.question(key, items)
    n_questions, n_runs, n_labels, n_verdicts, n_mct = writer.write()
    return ImportResult(
        lines=len(lines),
        questions=n_questions,
        runs=n_runs,
        labels=n_labels,
        mct=n_mct,
        skipped_runs=len(lines) - n_runs - len(writer.replaced),
        question_ids=writer.question_ids,
        normalised=notes.summary(),
        first_seen={k: v for k, v in notes.first.items() if k in notes.summary()},
        replaced_runs=len(writer.replaced),
        reference_labels=writer.n_reference,
        alternates=len(writer.links),
        judge_verdicts=n_verdicts,
        tools=(tools or LogTools()).summary(n for x in lines for n in x.trajectory.tool_names()),
    )


class _Writer:
    """The rows one import writes: new and changed questions, new and replaced runs, labels and
    verdicts, compared with what the store holds for the file's questions."""

    def __init__(
        self,
        store: Store,
        path: Path,
        domain: str,
        replace: bool,
        match_mode: str,
        arguments: bool | str,
        overrides: dict[str, Any] | None,
        tools: LogTools | None,
        by_key: dict[str, list[ImportLine]],
    ):
        self.store, self.path, self.domain, self.replace, self.tools = store, path, domain, replace, tools
        self.match_mode, self.arguments, self.overrides = match_mode, arguments, overrides
        self.detail = match_detail(match_mode, arguments, overrides).replace("gold:", "reference:")
        self.ids = {k: Question.derive_id(domain, "import", k) for k in by_key}
        self.stored_q = {q.id: q for q in store.questions(ids=list(self.ids.values()))}
        self.stored_runs = {r.id: r for r in store.runs(question_ids=list(self.ids.values()))}
        self.stored_labels = {lb.run_id: lb.correct for lb in store.labels() if lb.source == "import"}
        self.links = _alternate_links(store, by_key, self.ids, self.stored_q, path, domain)
        self.questions: list[Question] = []
        self.updated: list[Question] = []
        self.runs: list[Run] = []
        self.replaced: list[Run] = []
        self.labels: list[Label] = []
        self.verdicts: list[JudgeVerdict] = []
        self.question_ids: dict[str, str] = {}
        self.n_reference = 0

    def question(self, key: str, items: list[ImportLine]) -> None:
        """The rows of one store question (a question_id, or a group) and its runs."""
        store_id = self.ids[key]
        text = items[0].question
        old = self.stored_q.get(store_id)
        origin, parent_id, group_id = (
            ("alternate", *self.links[key]) if key in self.links else ("import", None, key)
        )
        if old is not None and not self.replace:
            self._check_stored(key, items, old, (origin, parent_id))
        kept: dict[str, Any] = {}
        for item in items:
            self.question_ids.setdefault(item.question_id, store_id)
            entry = kept_entry(item, old.text if old is not None and not self.replace else text)
            kept[str(item.run)] = entry
            self._run(item, store_id, entry, old)
        info = {"question_id": items[0].question_id, "file": self.path.name, "runs": kept}
        if items[0].group is not None:
            info["group_id"] = items[0].group
        if self.tools is not None and self.tools.writes:
            info[WRITE_TOOLS_KEY] = sorted(self.tools.writes)
        if old is None:
            self.questions.append(
                Question(
                    id=store_id,
                    domain=self.domain,
                    text=text,
                    origin=origin,
                    parent_id=parent_id,
                    group_id=group_id,
                    meta={"import": info},
                )
            )
        else:
            self._update(
                old, key, text, info, {"origin": origin, "parent_id": parent_id, "group_id": group_id}
            )
        self.question_ids.setdefault(key, store_id)

    def _check_stored(
        self, key: str, items: list[ImportLine], old: Question, link: tuple[str, str | None]
    ) -> None:
        """Refuses (without `replace`) a question stored before as another question: another text,
        question_id against group_id, or another origin or base question."""
        first, path = items[0], self.path
        if old.text != first.question and first.group is None:
            raise BadInput(
                f"{path}:{first.line}: question_id {first.question_id!r} is already stored with another "
                "question text; use --replace to replace it and its runs"
            )
        if ("group_id" in old.meta.get("import", {})) != (first.group is not None):
            stored, here = ("group_id", "question_id") if first.group is None else ("question_id", "group_id")
            raise BadInput(
                f"{path}:{first.line}: {here}: {key!r} is stored as the {stored} of another question "
                f"(domain {self.domain!r}); one name would merge two questions: rename it, or use --replace"
            )
        if (old.origin, old.parent_id) != link:
            raise BadInput(
                f"{path}:{first.line}: meta.origin: question_id {first.question_id!r} is already stored as "
                f"an {old.origin} question{f' of {old.parent_id}' if old.parent_id else ''}, here it is "
                f"{'an alternate of ' + repr(self.links[key][0]) if key in self.links else 'a base question'}; "
                "use --replace to replace it and its runs"
            )

    def _run(self, item: ImportLine, store_id: str, entry: dict[str, Any], old: Question | None) -> None:
        """A line's run, its label (its own, else by its reference) and its judge verdict; a run
        stored with the same content is skipped, with other content refused or replaced."""
        run = Run(
            id=Run.derive_id(store_id, item.run),
            question_id=store_id,
            run_index=item.run,
            trajectory=item.trajectory,
            prompt_tokens=_number(item.meta, "prompt_tokens", int),
            completion_tokens=_number(item.meta, "completion_tokens", int),
            latency_s=_number(item.meta, "latency_s", float),
        )
        if (verdict := _judge_verdict(item, run.id, self.path)) is not None:
            self.verdicts.append(verdict)
        label, how = item.label, f"import:{self.path.name}:{item.line}"
        if label is None and item.reference is not None:
            label = match(
                item.trajectory.calls, item.reference, self.match_mode, self.arguments, self.overrides
            )
            how = f"{self.detail}:{self.path.name}:{item.line}"
            self.n_reference += 1
        before = self.stored_runs.get(run.id)
        if before is not None:
            old_entry = ((old.meta if old else {}).get("import", {}).get("runs", {})).get(str(item.run))
            same = (
                _dump(before.trajectory) == _dump(run.trajectory)
                and _dump(old_entry) == _dump(entry)
                and (label is None or self.stored_labels.get(run.id) == label)
            )
            if same:
                return
            if not self.replace:
                what = "group_id" if item.group is not None else "question_id"
                raise BadInput(
                    f"{self.path}:{item.line}: {what} {item.key!r} run {item.run} is already stored with other "
                    "content (trajectory, meta or label); use --replace to replace the run, its label "
                    "and what was derived from it"
                )
            self.replaced.append(run)
        else:
            self.runs.append(run)
        if label is not None:
            self.labels.append(Label(run_id=run.id, source="import", correct=label, detail=how))

    def _update(self, old: Question, key: str, text: str, info: dict[str, Any], link: dict[str, Any]) -> None:
        """A stored question with this import's runs merged into its meta (and, with `replace`, its
        text and link), when anything changed."""
        merged = dict(old.meta.get("import", {}))
        merged["runs"] = {**merged.get("runs", {}), **info["runs"]}
        if WRITE_TOOLS_KEY in info:
            merged[WRITE_TOOLS_KEY] = info[WRITE_TOOLS_KEY]
        meta = {**old.meta, "import": merged}
        new_text = text if self.replace else old.text
        # a base question keeps the group it was stored with; an alternate follows its base's
        if key not in self.links:
            link = {**link, "group_id": old.group_id}
        if meta != old.meta or new_text != old.text or any(getattr(old, k) != v for k, v in link.items()):
            self.updated.append(old.model_copy(update={"meta": meta, "text": new_text, **link}))

    def write(self) -> tuple[int, int, int, int, int]:
        """Everything in one transaction, then each question's MCT over all its stored runs:
        (questions, runs, labels, verdicts, MCTs) written."""
        store = self.store
        with store.transaction():
            n_questions = store.add_questions(self.questions)
            for q in self.updated:
                store.update_question(q)
            if self.replaced:
                store.replace_runs(self.replaced)
            n_runs = store.add_runs(self.runs)
            n_labels = store.add_labels(self.labels)
            # after the runs: a replaced run's verdicts went with it; a stored verdict stays
            n_verdicts = store.add_judge_verdicts(self.verdicts) if self.verdicts else 0
            stored: dict[str, list[Run]] = {}
            for r in store.runs(question_ids=list(self.ids.values())):
                stored.setdefault(r.question_id, []).append(r)
            mct_rows = [m for rs in stored.values() if (m := most_common_trajectory(rs)) is not None]
            store.set_mct(mct_rows)
        return n_questions, n_runs, n_labels, n_verdicts, len(mct_rows)


def _alternate_links(
    store: Store,
    by_key: dict[str, list[ImportLine]],
    ids: dict[str, str],
    stored_q: dict[str, Question],
    path: Path,
    domain: str,
) -> dict[str, tuple[str, str]]:
    """Store question key -> (parent's store id, parent's group_id) for the questions whose lines say
    `meta.origin` "alternate": `meta.parent_question_id` names a question_id or group_id of the file,
    or a question imported before into `domain`; anything else is refused."""
    key_of = {item.question_id: key for key, items in by_key.items() for item in items}
    wanted = {key: (items[0], parent) for key, items in by_key.items() if (parent := _parent(items, path))}
    outside = {
        p: Question.derive_id(domain, "import", p)
        for _, p in wanted.values()
        if p not in by_key and p not in key_of
    }
    found = {q.id: q for q in store.questions(ids=list(outside.values()))} if outside else {}
    links: dict[str, tuple[str, str]] = {}
    for key, (item, parent) in wanted.items():
        where = f"{path}:{item.line}: meta.parent_question_id"
        parent_key = parent if parent in by_key else key_of.get(parent)
        if parent_key is not None:
            if parent_key in wanted:
                raise BadInput(
                    f"{where}: {parent!r} is itself an alternate; an alternate's base is a base question"
                )
            old = stored_q.get(ids[parent_key])
            links[key] = (ids[parent_key], old.group_id if old is not None and old.group_id else parent_key)
            continue
        base = found.get(outside[parent])
        if base is None:
            raise BadInput(
                f"{where}: {parent!r} is not a question_id or group_id of this file nor a question imported "
                f"into domain {domain!r} before; import the base question with its alternates"
            )
        if base.origin == "alternate":
            raise BadInput(
                f"{where}: {parent!r} is itself an alternate; an alternate's base is a base question"
            )
        links[key] = (base.id, base.group_id or base.id)
    return links


def _parent(items: list[ImportLine], path: Path) -> str | None:
    """The base question an alternate's lines name (every run of it the same), None for a base
    question."""
    alternate = [item.meta.get("origin") == "alternate" for item in items]
    if not any(alternate):
        return None
    if not all(alternate):
        other = items[alternate.index(False)]
        raise BadInput(
            f"{path}:{other.line}: meta.origin: {other.question_id!r} is an alternate on line "
            f"{items[alternate.index(True)].line} but not here; give every run of it the same origin"
        )
    parent = items[0].meta.get("parent_question_id")
    for item in items:
        named = item.meta.get("parent_question_id")
        if not isinstance(named, str) or not named.strip():
            raise BadInput(
                f'{path}:{item.line}: meta.parent_question_id: an alternate (meta.origin "alternate") needs '
                "the question_id of its base question, a string"
            )
        if named != parent:
            raise BadInput(
                f"{path}:{item.line}: meta.parent_question_id: {named!r} differs from {parent!r} on line "
                f"{items[0].line}; an alternate has one base question"
            )
    return parent


def _judge_verdict(item: ImportLine, run_id: str, path: Path) -> JudgeVerdict | None:
    """The judge verdict a line's meta carries (a boolean `judge_correct`), else None."""
    meta = item.meta
    if not isinstance(meta.get("judge_correct"), bool):
        return None
    return JudgeVerdict(
        run_id=run_id,
        model=meta.get("judge_model") or "judge",
        correct=meta["judge_correct"],
        reason=f"import:{path.name}:{item.line}",
        prompt_tokens=_number(meta, "judge_prompt_tokens", int),
        completion_tokens=_number(meta, "judge_completion_tokens", int),
    )


def _number(meta: dict[str, Any], key: str, kind: type) -> Any:
    value = meta.get(key)
    return kind(value) if isinstance(value, int | float) and not isinstance(value, bool) else kind(0)


def _dump(value: Any) -> str:
    return canonical_json(value.model_dump() if hasattr(value, "model_dump") else value)
