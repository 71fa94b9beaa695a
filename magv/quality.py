"""Checks a rule can decide on a generated question, and the repairs a rule can make.

* **answerable**: the question states what its target trajectory needs from the customer. Those
  values are the arguments of the target's calls that the target seed's own question states (an
  email, an order id, a zip code, a product, a budget), and a time when the seed's question gives
  one for a time argument ("yesterday afternoon" for `start`/`end`). A value an earlier call finds
  (the customer id a lookup returns, a tracking number an order shows) is not asked of the customer,
  since the seed's customer did not state it either; enum arguments (a status, a field) are the
  assistant's reading of the request and are not asked for either.
* **voice**: one request in a customer's voice: not the assistant's side ("I'd be happy to help",
  "could you provide your email"), not three or more requests chained.
* **identifiers** (alternates): the alternate carries the identifiers of the question it was
  reverse-engineered from (emails, ids, IP addresses, hosts).

`check_question` returns a `QualityCheck` (stored per question, `magv/store/quality.py`);
`repair` turns a failing question into a passing one where a rule can: it keeps the first request
of a chain, puts a needed value in place of another value of the same form, and appends a missing
value in the customer's words. What a rule cannot decide (is the request the same one the target
answers?) is left to fidelity: the responder's most common trajectory against the target,
measured where the target is known (`magv/report/quality.py`).
"""

from __future__ import annotations

import re
from collections.abc import Collection, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from magv.models import GROUNDED, Seed, ToolSpec

# Stored with each check: rows of another version are checked again.
CHECKS_VERSION = "1"

EMAIL = re.compile(r"\b[\w.+-]+@[\w-]+(?:\.[\w-]+)+\b")
IPV4 = re.compile(r"\b(?:\d{1,3}\.){3}\d{1,3}\b")
_ISO_TIME = re.compile(r"^\d{4}-\d{2}-\d{2}([T ]\d{2}:\d{2}(:\d{2})?)?$|^-\d+[smhdw]$|^now$", re.I)
_DAY = r"(?:mon|tues|wednes|thurs|fri|satur|sun)day"
_PART = r"(?:morning|afternoon|evening|night)"
TIME_EXPRESSION = re.compile(
    r"\b(?:yesterday(?:\s+" + _PART + r")?|today|tonight|overnight|this\s+" + _PART
    + r"|(?:this|last|past|previous)\s+(?:\d+\s+|few\s+|couple\s+of\s+)?"
    r"(?:minutes?|hours?|days?|weeks?|months?|weekend|" + _PART + r")"
    + r"|(?:on\s+)?" + _DAY + r"(?:\s+" + _PART + r")?"
    r"|\d{1,2}(?::\d{2})?\s*(?:am|pm)\b|\d{1,2}:\d{2}|\d{4}-\d{2}-\d{2}(?:[T ]\d{2}:\d{2})?"
    r"|(?:on\s+)?the\s+\d{1,2}(?:st|nd|rd|th)"
    r"|(?:jan|feb|mar|apr|may|jun|jul|aug|sep|oct|nov|dec)[a-z]*\.?\s+\d{1,2}(?:st|nd|rd|th)?"
    r"|\d+\s*(?:minutes?|mins?|hours?|hrs?|days?|weeks?)\s+ago|since\s+\w+)",
    re.I,
)  # fmt: skip

# The assistant's side of a conversation, as small models write it when asked for a customer's.
_ASSISTANT = re.compile(
    "|".join([
        r"\b(?:i'?d|i would|i'?ll|i will|i am|i'm|we'?d|we would|we'?ll) (?:be )?(?:happy|glad|delighted|more than happy) to\b",
        r"\b(?:how )?(?:can|may) i (?:help|assist)\b",
        r"\b(?:help|assist) you\b",
        r"\bis there anything else\b",
        r"\b(?:thank you|thanks) for (?:contacting|reaching|choosing|your (?:patience|understanding|cooperation))",
        r"\bi apologi[sz]e\b",
        r"\bsorry for (?:the|any) inconvenience\b",
        r"\byou(?:'re| are) (?:looking for|experiencing|having)\b",
        r"\b(?:provide|share|give|tell|confirm|send)(?: me)?(?: with)? your\b",
        r"\byour (?:order|account|email|refund|return|package|parcel|shipment|purchase|customer|request|"
        r"details|address|payment|issue|problem|query|question|inquiry|concern|full name|name)\b",
        r"\b(?:feel free|don'?t hesitate) to\b",
        r"\bplease let me know if you\b",
        r"\bwe look forward\b",
        r"\bour records\b",
        r"\byour information\b",
        r"\bthe customer(?:'s)?\b",
        r"^\s*(?:sure|certainly|of course|absolutely|here (?:is|are)|based on)\b",
    ]),
    re.I,
)  # fmt: skip
_CHAIN_MARKER = re.compile(r"^(?:also|additionally|lastly|finally|moreover|furthermore)\b", re.I)
_INTERROGATIVE = re.compile(
    r"^(?:if (?:yes|no|so|not),\s*)?(?:what|when|where|who|why|how|which|is|are|do|does|did|can|could|would|will)\b",
    re.I,
)
# A chain of more requests than this is not one request.
MAX_REQUESTS = 2

# How a customer states a missing value (by argument name); others: "The <argument> is <value>."
_SAY = {
    "email": "My email is {}.",
    "order_id": "My order is {}.",
    "zip": "My zip code is {}.",
    "tracking_number": "My tracking number is {}.",
    "query": "I'm looking for {}.",
    "max_price": "My budget is ${}.",
    "alert_id": "It's about alert {}.",
    "incident_id": "It's about incident {}.",
    "client_ip": "The IP address is {}.",
    "product_id": "The product is {}.",
}


@dataclass(frozen=True)
class Need:
    """A value the customer has to state: `value` for an argument, or a time (`kind` time, with
    the seed's phrase as `value`)."""

    param: str
    value: str
    kind: str = "value"  # value | time

    def label(self) -> str:
        return "a time" if self.kind == "time" else f"{self.param} {self.value}"


@dataclass
class QualityCheck:
    """The rule checks of one question. `reasons` name each failure ("missing email x@y",
    "assistant voice: 'I'd be happy to'", "3 requests chained"); `repair` says what a rule
    changed, `original` the text before it."""

    answerable: bool | None = None  # None: no target to check against
    voice: bool = True
    identifiers: bool | None = None  # alternates only
    reasons: list[str] = field(default_factory=list)
    repair: str | None = None
    original: str | None = None
    version: str = CHECKS_VERSION

    @property
    def passed(self) -> bool:
        return self.voice and self.answerable is not False and self.identifiers is not False

    def as_row(self, question_id: str) -> dict[str, Any]:
        return {
            "question_id": question_id,
            "version": self.version,
            "passed": self.passed,
            "answerable": self.answerable,
            "voice": self.voice,
            "identifiers": self.identifiers,
            "reasons": self.reasons,
            "repair": self.repair,
            "original": self.original,
        }


# -- what a question needs ------------------------------------------------------------------------


def _words(text: str) -> set[str]:
    return {w[:-1] if len(w) > 3 and w.endswith("s") else w for w in re.findall(r"[\w$-]+", text.lower())}


def _as_text(value: Any) -> str | None:
    if isinstance(value, bool) or value is None:
        return None
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    if isinstance(value, int | float | str):
        return str(value).strip() or None
    return None


def mentions(text: str, value: str) -> bool:
    """Whether `text` states `value`: an id or number as a whole token (case-insensitive), a
    phrase as all its words (plurals folded)."""
    if any(c.isdigit() for c in value) or "@" in value or " " not in value.strip():
        number = re.fullmatch(r"\d+(?:\.\d+)?", value)
        tail = r"(?:\.0+)?(?![\w])" if number else r"(?![\w-])"
        return re.search(r"(?<![\w.-])" + re.escape(value) + tail, text, re.I) is not None
    need = _words(value)
    return bool(need) and need <= _words(text)


def is_time(param: str, value: str) -> bool:
    return bool(_ISO_TIME.match(value)) or param in ("start", "end", "since", "until")


def needed_values(seed: Seed, specs: Mapping[str, ToolSpec]) -> list[Need]:
    """What a question for this seed's trajectory must state: the target's argument values that
    the seed's own question states, and a time when it gives one for a time argument."""
    needs: dict[tuple[str, str], Need] = {}
    time_phrase = TIME_EXPRESSION.search(seed.question)
    for call in seed.trajectory:
        props = (specs[call.name].parameters.get("properties") or {}) if call.name in specs else {}
        for param, raw in call.arguments.items():
            if "enum" in (props.get(param) or {}):
                continue
            value = _as_text(raw)
            if value is None:
                continue
            if is_time(param, value):
                if time_phrase:
                    needs.setdefault(("", "time"), Need("time", time_phrase.group(0), "time"))
            elif mentions(seed.question, value):
                needs.setdefault((param, value.lower()), Need(param, value))
    return list(needs.values())


def identifier_patterns(specs: Iterable[ToolSpec]) -> list[re.Pattern[str]]:
    """Forms of an identifier in a domain: emails, IPv4 addresses and its grounded ids."""
    out = [EMAIL, IPV4]
    for spec in specs:
        for prop in (spec.parameters.get("properties") or {}).values():
            holder = prop.get("items") if prop.get("type") == "array" else prop
            pattern = holder.get(GROUNDED) if isinstance(holder, dict) else None
            if isinstance(pattern, str) and pattern not in {p.pattern for p in out}:
                out.append(re.compile(pattern))
    return out


def identifiers(text: str, patterns: Sequence[re.Pattern[str]], needs: Sequence[Need] = ()) -> list[str]:
    """The identifiers `text` states: matches of the domain's id forms, and the values of `needs`
    it states that hold a digit and are not plain small numbers (a host app-03, a zip code)."""
    found: dict[str, None] = {}
    for p in patterns:
        for m in p.finditer(text):
            found.setdefault(m.group(0), None)
    for n in needs:
        v = n.value
        id_like = (
            n.kind == "value" and any(c.isdigit() for c in v) and not re.fullmatch(r"\d{1,4}(\.\d+)?", v)
        )
        if id_like and mentions(text, v) and not any(v.lower() in f.lower() for f in found):
            found.setdefault(v, None)
    return list(found)


# -- voice ----------------------------------------------------------------------------------------


def requests(text: str) -> int:
    """Requests in a text: its questions ("??" is one), its sentences that chain another request
    on ("Also, ...", "Lastly, ..."), and a last question cut off before its question mark (a
    reply that ran into its length limit)."""
    questions = len(re.findall(r"\?+", text))
    sentences = re.split(r"(?<=[.!?])\s+", text.strip())
    chained = sum(1 for s in sentences if _CHAIN_MARKER.match(s) and not s.rstrip().endswith("?"))
    last = sentences[-1] if sentences else ""
    cut = bool(last) and last[-1] not in ".!?" and _INTERROGATIVE.match(last) is not None
    return questions + chained + cut


def voice_reasons(text: str) -> list[str]:
    """Why a text is not one customer request (empty when it is)."""
    reasons = []
    m = _ASSISTANT.search(text)
    if m:
        reasons.append(f"assistant voice: {m.group(0).strip()!r}")
    n = requests(text)
    if n > MAX_REQUESTS:
        reasons.append(f"{n} requests chained")
    return reasons


def first_request(text: str) -> str:
    """The text up to its first question (what comes before it is the customer's context)."""
    m = re.search(r"\?+", text)
    return text[: m.end()].strip() if m else text.strip()


# -- checks and repairs ---------------------------------------------------------------------------


def check_question(
    text: str,
    needs: Sequence[Need] | None = None,
    ids: Sequence[str] | None = None,
    patterns: Sequence[re.Pattern[str]] = (),
    known: Collection[str] | None = None,
) -> QualityCheck:
    """The checks of one question. `needs`: what its target needs from the customer (None: no
    target, answerable is not checked); `ids`: for an alternate, its base question's identifiers;
    `known` (with the domain's identifier `patterns`): the target's values, so that an identifier
    the target never uses (another order than the one it acts on) makes the question unanswerable."""
    check = QualityCheck()
    reasons = voice_reasons(text)
    check.voice = not reasons
    if needs is not None:
        missing = [n for n in needs if not _states(text, n)]
        foreign = foreign_identifiers(text, patterns, known) if known is not None else []
        check.answerable = not missing and not foreign
        reasons += [f"missing {n.label()}" for n in missing]
        reasons += [f"wrong identifier {i} (the target does not use it)" for i in foreign]
    if ids is not None:
        lost = [i for i in ids if not mentions(text, i)]
        check.identifiers = not lost
        reasons += [f"missing identifier {i}" for i in lost]
    check.reasons = reasons
    return check


def target_values(calls: Iterable[Any]) -> set[str]:
    """Every scalar argument value of a trajectory's calls (list items too), lowercased."""
    out: set[str] = set()
    for call in calls:
        for raw in call.arguments.values():
            for v in raw if isinstance(raw, list) else [raw]:
                text = _as_text(v)
                if text is not None:
                    out.add(text.lower())
    return out


def foreign_identifiers(text: str, patterns: Sequence[re.Pattern[str]], known: Collection[str]) -> list[str]:
    """Identifiers the text states (by the domain's forms) that are not among `known` values."""
    found = identifiers(text, patterns)
    return [i for i in found if i.lower() not in known and i.lower().lstrip("#") not in known]


def _states(text: str, need: Need) -> bool:
    return TIME_EXPRESSION.search(text) is not None if need.kind == "time" else mentions(text, need.value)


def repair(
    text: str,
    needs: Sequence[Need] | None = None,
    ids: Sequence[str] | None = None,
    patterns: Sequence[re.Pattern[str]] = (EMAIL,),
    known: Collection[str] | None = None,
) -> tuple[str, QualityCheck]:
    """The question with what rules can fix fixed, and its check (`check_question`'s arguments).
    A failing voice is cut to the first request when that passes; a missing value replaces the one
    other value of its form (an email for another email), else is appended in the customer's
    words. The check records the repair and the text it started from."""
    first = check_question(text, needs, ids, patterns, known)
    if first.passed:
        return text, first
    done: list[str] = []
    fixed = text
    if not first.voice:
        head = first_request(fixed)
        if head != fixed and len(head) >= 12 and not voice_reasons(head):
            fixed = head
            done.append("kept the first request")
    wanted = [n for n in (needs or ()) if not _states(fixed, n)]
    wanted += [
        Need("email" if EMAIL.fullmatch(i) else "id", i) for i in (ids or ()) if not mentions(fixed, i)
    ]
    appended: list[Need] = []
    for n in wanted:
        replaced = _replace_same_form(fixed, n, patterns) if n.kind == "value" else None
        if replaced is not None:
            fixed = replaced
            done.append(f"replaced a wrong {n.param}")
        else:
            appended.append(n)
    if appended:
        head = fixed.rstrip(" ,;:")
        fixed = f"{head}{'' if head.endswith(('.', '?', '!')) else '.'} {_say(appended)}"
        done.append("appended " + ", ".join(n.param for n in appended))
    final = check_question(fixed, needs, ids, patterns, known)
    if done and fixed != text:
        final.repair = "; ".join(done)
        final.original = text
        final.reasons = [f"before repair: {r}" for r in first.reasons] + final.reasons
    return fixed, final


def repair_all(
    texts: Sequence[str],
    needs: Sequence[Need] | None,
    ids: Sequence[str] | None,
    patterns: Sequence[re.Pattern[str]],
    known: Collection[str] | None = None,
) -> list[tuple[str, QualityCheck]]:
    """`repair` of each text, without the ones a repair made equal to an earlier one."""
    seen: set[str] = set()
    out = []
    for text in texts:
        fixed, check = repair(text, needs, ids, patterns, known)
        if fixed.lower() not in seen:
            seen.add(fixed.lower())
            out.append((fixed, check))
    return out


def _replace_same_form(text: str, need: Need, patterns: Sequence[re.Pattern[str]]) -> str | None:
    """`text` with its one value of the need's form (say, another email) replaced by the need's."""
    for p in patterns:
        if p.fullmatch(need.value):
            others = {m.group(0) for m in p.finditer(text)}
            if len(others) == 1:
                return text.replace(others.pop(), need.value)
            return None
    return None


def _say(needs: Sequence[Need]) -> str:
    """Missing values in the customer's words ("My email is x@y. My name is Ana Diaz.")."""
    names = {n.param: n.value for n in needs if n.param in ("first_name", "last_name")}
    out = [f"My name is {names['first_name']} {names['last_name']}."] if len(names) == 2 else []
    for n in needs:
        if len(names) == 2 and n.param in names:
            continue
        if n.kind == "time":
            out.append(f"I mean {n.value}.")
        elif n.param in _SAY:
            out.append(_SAY[n.param].format(n.value))
        elif n.param == "id":
            out.append(f"It's about {n.value}.")
        else:
            out.append(f"The {n.param.replace('_', ' ')} is {n.value}.")
    return " ".join(out)
