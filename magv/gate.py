"""Pass/fail bars for CI: `--fail-under METRIC=VALUE` on `magv eval` and `--fail-under X` on
`magv verify score` (the metric `verified`). Parsing checks every bar before any work starts (bad
bars exit 2); after the work, `shortfalls` lists what fell below its bar and `enforce` says so and
exits 1 if anything did."""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence

from magv.errors import BadInput, RunFailed


def parse_bars(
    specs: Sequence[str] | None, valid: Sequence[str], option: str = "--fail-under"
) -> dict[str, float]:
    """{metric: bar} from METRIC=VALUE specs (repeatable, or comma-separated in one); each metric
    must be one of `valid` and each bar a number in [0, 1]."""
    bars: dict[str, float] = {}
    for spec in specs or []:
        for part in filter(None, (p.strip() for p in spec.split(","))):
            metric, sep, value = part.partition("=")
            metric = metric.strip()
            if not sep:
                raise BadInput(f"{option}: {part!r} is not METRIC=VALUE (e.g. strict=0.6)")
            if metric not in valid:
                raise BadInput(f"{option}: {metric!r} is not one of {', '.join(valid)}")
            bars[metric] = share(value, f"{option} {metric}")
    return bars


def share(value: str | float, where: str) -> float:
    try:
        x = float(value)
    except ValueError:
        raise BadInput(f"{where}: {value!r} is not a number") from None
    if not 0.0 <= x <= 1.0:
        raise BadInput(f"{where}: {x:g} is not a share between 0 and 1")
    return x


def shortfalls(
    values: Mapping[str, float | None],
    bars: Mapping[str, float],
    label: str = "",
    details: Mapping[str, str] | None = None,
) -> list[str]:
    """One line per metric below its bar (with its `details`, e.g. the counts behind a share); a
    metric that was not measured counts as below."""
    out = []
    prefix = f"{label}: " if label else ""
    for metric, bar in bars.items():
        v = values.get(metric)
        detail = f" ({details[metric]})" if details and metric in details else ""
        if v is None:
            out.append(f"{prefix}{metric} was not measured (bar {bar:g}){detail}")
        elif v < bar:
            out.append(f"{prefix}{metric} {v:.4g} < {bar:g}{detail}")
    return out


def enforce(fell: Sequence[str], bars: Mapping[str, float], command: str, say: Callable[[str], None]) -> None:
    """The gate's outcome: each shortfall said (`say` prints rich markup on stderr) and RunFailed
    (exit 1) when there is one; "gate passed" when there were bars and none fell."""
    if fell:
        for line in fell:
            say(f"[red]below the bar:[/red] {line}")
        raise RunFailed(f"{command}: {len(fell)} metric(s) below --fail-under")
    if bars:
        say(f"gate passed: {', '.join(f'{k} >= {v:g}' for k, v in bars.items())}")
