"""Figures for the report, drawn with matplotlib's object API (no pyplot: no global state, safe in
threads) and embedded as SVG data URIs, so the HTML needs nothing from the network.

Every function takes plain data and returns a Figure, or None when there is nothing to draw.
"""

from __future__ import annotations

import base64
import io
from collections.abc import Callable
from typing import Any

import matplotlib
from matplotlib.figure import Figure
from matplotlib.ticker import FuncFormatter, LogLocator, MaxNLocator, NullFormatter

from magv.definitions import MATCH_MODES

PALETTE = [
    "#3b6ea8",
    "#e07b39",
    "#4f9d69",
    "#c44e52",
    "#8172b2",
    "#937860",
    "#da8bc3",
    "#8c8c8c",
    "#ccb974",
    "#64b5cd",
]
GOOD, BAD, NEUTRAL = "#4f9d69", "#c44e52", "#8c8c8c"
# drop reasons must never look like "kept" (green)
REASON_COLOURS = ["#e07b39", "#8172b2", "#937860", "#da8bc3", "#ccb974", "#64b5cd", "#8c8c8c"]
_STYLE = {
    "font.size": 9, "axes.titlesize": 10, "axes.titleweight": "bold", "axes.spines.top": False,
    "axes.spines.right": False, "axes.grid": True, "grid.color": "#e6e6e6", "grid.linewidth": 0.6,
    "axes.axisbelow": True, "axes.edgecolor": "#999999", "legend.frameon": False, "svg.fonttype": "path",
    "axes.prop_cycle": matplotlib.cycler(color=PALETTE),
}  # fmt: skip


def data_uri(fig: Figure) -> str:
    buf = io.BytesIO()
    with matplotlib.rc_context(_STYLE):
        fig.savefig(buf, format="svg", bbox_inches="tight", metadata={"Date": None})
    return "data:image/svg+xml;base64," + base64.b64encode(buf.getvalue()).decode()


def _figure(width: float = 6.0, height: float = 3.2) -> Figure:
    with matplotlib.rc_context(_STYLE):
        return Figure(figsize=(width, height), layout="constrained")


def _styled(fn: Callable[..., Figure | None]) -> Callable[..., Figure | None]:
    def wrapper(*args: Any, **kwargs: Any) -> Figure | None:
        with matplotlib.rc_context(_STYLE):
            return fn(*args, **kwargs)

    wrapper.__name__ = fn.__name__
    wrapper.__doc__ = fn.__doc__
    return wrapper


# -- run summary --------------------------------------------------------------------------------


@_styled
def stage_seconds(stages: dict[str, dict[str, Any]]) -> Figure | None:
    items = [(name, float(s["seconds"])) for name, s in stages.items() if s.get("seconds") is not None]
    if not items:
        return None
    fig = _figure(6, 0.45 * len(items) + 0.8)
    ax = fig.add_subplot()
    names, secs = zip(*items, strict=True)
    bars = ax.barh(names, secs, color=PALETTE[0])
    ax.bar_label(bars, labels=[_seconds(s) for s in secs], padding=3, fontsize=8)
    ax.invert_yaxis()
    ax.set_xlabel("wall time (s)")
    ax.set_title("Wall time per stage")
    ax.margins(x=0.15)
    return fig


@_styled
def tokens_by_role(models: list[dict[str, Any]]) -> Figure | None:
    if not models:
        return None
    fig = _figure(6, 0.45 * len(models) + 0.9)
    ax = fig.add_subplot()
    labels = [f"{m['role']} ({m['model']})" for m in models]
    prompt = [m["prompt_tokens"] for m in models]
    completion = [m["completion_tokens"] for m in models]
    ax.barh(labels, prompt, color=PALETTE[0], label="prompt")
    ax.barh(labels, completion, left=prompt, color=PALETTE[1], label="completion")
    ax.invert_yaxis()
    ax.xaxis.set_major_formatter(FuncFormatter(lambda v, _: _compact(v)))
    ax.set_xlabel("tokens")
    ax.set_title("Tokens by agent role")
    ax.legend(
        loc="upper center", bbox_to_anchor=(0.5, -0.35 if len(models) < 4 else -0.2), ncol=2, fontsize=8
    )
    return fig


# -- question generation ------------------------------------------------------------------------


@_styled
def per_target(targets: list[dict[str, Any]]) -> Figure | None:
    rows = [t for t in targets if t["generated"]]
    if not rows:
        return None
    reasons = sorted({r for t in rows for r in t["dropped_by_reason"]})
    fig = _figure(6.5, 0.5 * len(rows) + 1.2)
    ax = fig.add_subplot()
    names = [t["seed_id"] for t in rows]
    left = [t["kept"] for t in rows]
    ax.barh(names, left, color=GOOD, label="kept")
    for i, reason in enumerate(reasons):
        values = [t["dropped_by_reason"].get(reason, 0) for t in rows]
        ax.barh(
            names,
            values,
            left=left,
            color=REASON_COLOURS[i % len(REASON_COLOURS)],
            label=f"dropped: {reason}",
        )
        left = [a + b for a, b in zip(left, values, strict=True)]
    ax.invert_yaxis()
    _counts(ax.xaxis)
    ax.set_xlabel("generated questions")
    ax.set_title("Generated questions per target trajectory")
    ax.legend(loc="upper center", bbox_to_anchor=(0.5, -0.25), ncol=3, fontsize=8)
    return fig


@_styled
def embedding_map(points: list[tuple[Any, ...]], labelled: int = 40) -> Figure | None:
    """points: (x, y, cluster, kept[, label]); up to `labelled` points are annotated with their label
    (the start of the question) so a reader can tell which question is where."""
    if not points:
        return None
    fig = _figure(7, 4.8)
    ax = fig.add_subplot()
    many = len(points) > 3000  # raster dots inside the SVG keep big maps small
    clusters = sorted({p[2] for p in points if p[2] is not None})
    for i, c in enumerate(clusters):
        xs = [p[0] for p in points if p[2] == c and p[3]]
        ys = [p[1] for p in points if p[2] == c and p[3]]
        ax.scatter(xs, ys, s=22, color=PALETTE[i % len(PALETTE)], label=f"cluster {c}", rasterized=many)
    dropped = [p for p in points if not p[3]]
    if dropped:
        ax.scatter(
            [p[0] for p in dropped],
            [p[1] for p in dropped],
            s=22,
            marker="x",
            color=NEUTRAL,
            linewidths=1,
            label="dropped",
            rasterized=many,
        )
    if len(points) <= labelled:
        for p in points:
            if len(p) > 4 and p[4]:
                ax.annotate(
                    _short(p[4]),
                    (p[0], p[1]),
                    xytext=(4, 3),
                    textcoords="offset points",
                    fontsize=6,
                    color="#3e4c59" if p[3] else NEUTRAL,
                )
    ax.set_title("Question embeddings (2-D), coloured by cluster")
    ax.set_xticks([])
    ax.set_yticks([])
    if clusters or dropped:
        ax.legend(loc="upper center", bbox_to_anchor=(0.5, -0.02), fontsize=8, ncol=min(6, len(clusters) + 1))
    return fig


def _short(text: str, limit: int = 28) -> str:
    text = " ".join(str(text).split())
    return text if len(text) <= limit else text[: limit - 1] + "…"


# -- responder ----------------------------------------------------------------------------------


@_styled
def steps_histogram(groups: dict[str, dict[str, int]], title: str = "Trajectory length") -> Figure | None:
    groups = {k: v for k, v in groups.items() if v}
    if not groups:
        return None
    keys = sorted({int(k) for h in groups.values() for k in h})
    fig = _figure(6, 3)
    ax = fig.add_subplot()
    width = 0.8 / len(groups)
    for i, (name, hist) in enumerate(groups.items()):
        total = sum(hist.values())
        ax.bar(
            [k + (i - (len(groups) - 1) / 2) * width for k in keys],
            [hist.get(str(k), 0) / total for k in keys],
            width=width,
            label=name,
        )
    ax.set_xticks(keys)
    ax.set_xlabel("steps in the trajectory")
    ax.set_ylabel("share of runs")
    ax.set_title(title)
    ax.legend()
    return fig


@_styled
def tool_use(per_tool: list[dict[str, Any]]) -> Figure | None:
    if not per_tool:
        return None
    fig = _figure(6, 0.38 * len(per_tool) + 1.2)
    ax = fig.add_subplot()
    names = [t["tool"] for t in per_tool]
    ok = [t["calls"] - t["errors"] for t in per_tool]
    err = [t["errors"] for t in per_tool]
    # only the segments that exist get a legend entry
    if any(ok):
        ax.barh(names, ok, color=PALETTE[0], label="succeeded")
    bars = ax.barh(names, err, left=ok, color=BAD, label="tool error" if any(err) else None)
    ax.bar_label(
        bars,
        labels=[f"{t['error_rate']:.0%} errors" if t["errors"] else "" for t in per_tool],
        padding=3,
        fontsize=8,
    )
    ax.invert_yaxis()
    ax.margins(x=0.18)
    _counts(ax.xaxis)
    ax.set_xlabel("calls")
    ax.set_title("Tool use and tool errors (base questions)")
    handles, labels = ax.get_legend_handles_labels()
    if handles:  # below the axes, never over the bars
        fig.legend(handles, labels, loc="outside lower center", ncol=2, fontsize=8)
    return fig


def _counts(axis: Any) -> None:
    """Whole-number ticks on an axis that counts things."""
    axis.set_major_locator(MaxNLocator(integer=True))


@_styled
def mct_share(shares: list[float]) -> Figure | None:
    if not shares:
        return None
    fig = _figure(6, 2.8)
    ax = fig.add_subplot()
    ax.hist(shares, bins=[i / 10 for i in range(11)], color=PALETTE[2], edgecolor="white")
    ax.set_xlim(0, 1)
    _counts(ax.yaxis)
    ax.set_xlabel("share of runs that follow the most common trajectory")
    ax.set_ylabel("questions")
    ax.set_title("Self-consistency: MCT share")
    return fig


# -- verifier -----------------------------------------------------------------------------------


@_styled
def cv_metrics(models: list[dict[str, Any]], best: str | None) -> Figure | None:
    if not models:
        return None
    metrics = ["accuracy", "precision", "recall", "f1", "roc_auc"]
    fig = _figure(6.5, 3.2)
    ax = fig.add_subplot()
    width = 0.8 / len(models)
    for i, m in enumerate(models):
        xs = [j + (i - (len(models) - 1) / 2) * width for j in range(len(metrics))]
        label = m["name"] + (" (deployed)" if m["name"] == best else "")
        ax.bar(
            xs,
            [m.get(k) or 0 for k in metrics],
            width=width,
            label=label,
            edgecolor="black" if m["name"] == best else None,
            linewidth=0.8,
        )
    ax.set_xticks(range(len(metrics)), metrics)
    ax.set_ylim(0, 1.05)
    ax.set_title("Grouped cross-validation, all models")
    ax.legend(loc="upper center", bbox_to_anchor=(0.5, -0.12), ncol=3, fontsize=8)
    return fig


@_styled
def confusion_grid(matrices: dict[str, list[list[int]]]) -> Figure | None:
    if not matrices:
        return None
    n = len(matrices)
    cols = min(n, 3)
    rows = (n + cols - 1) // cols
    fig = _figure(2.0 * cols + 0.4, 2.0 * rows + 0.4)
    for i, (name, m) in enumerate(matrices.items()):
        ax = fig.add_subplot(rows, cols, i + 1)
        ax.grid(False)
        ax.imshow(m, cmap="Blues", vmin=0)
        peak = max(max(r) for r in m) or 1
        for r in range(2):
            for c in range(2):
                ax.text(
                    c,
                    r,
                    str(m[r][c]),
                    ha="center",
                    va="center",
                    fontsize=10,
                    color="white" if m[r][c] > peak * 0.6 else "black",
                )
        ax.set_xticks([0, 1], ["wrong", "right"], fontsize=7)
        ax.set_yticks([0, 1], ["wrong", "right"], fontsize=7)
        ax.set_title(name, fontsize=8)
        if i % cols == 0:
            ax.set_ylabel("label", fontsize=7)
        ax.set_xlabel("predicted", fontsize=7)
    fig.suptitle("Confusion matrices (out of fold)", fontsize=10, fontweight="bold")
    return fig


@_styled
def roc(curves: dict[str, dict[str, Any]]) -> Figure | None:
    if not curves:
        return None
    fig = _figure(4.2, 4.4)
    ax = fig.add_subplot()
    for name, c in curves.items():
        ax.plot(c["roc"]["fpr"], c["roc"]["tpr"], label=f"{name} (AUC {c['roc']['auc']:.2f})", linewidth=1.4)
    ax.plot([0, 1], [0, 1], linestyle="--", color=NEUTRAL, linewidth=0.8)
    ax.set_xlabel("false positive rate")
    ax.set_ylabel("true positive rate")
    ax.set_title("ROC curves")
    _legend_below(ax, len(curves))
    return fig


@_styled
def precision_recall(curves: dict[str, dict[str, Any]]) -> Figure | None:
    if not curves:
        return None
    fig = _figure(4.2, 4.4)
    ax = fig.add_subplot()
    for name, c in curves.items():
        ax.step(
            c["pr"]["recall"],
            c["pr"]["precision"],
            where="post",
            linewidth=1.4,
            label=f"{name} (AP {c['pr']['average_precision']:.2f})",
        )
    base = next(iter(curves.values()))
    ax.axhline(base["positives"] / base["n"], linestyle="--", color=NEUTRAL, linewidth=0.8)
    ax.set_xlabel("recall")
    ax.set_ylabel("precision")
    ax.set_ylim(0, 1.05)
    ax.set_title("Precision-recall curves")
    _legend_below(ax, len(curves))
    return fig


@_styled
def calibration(curves: dict[str, dict[str, Any]]) -> Figure | None:
    if not curves:
        return None
    fig = _figure(4.2, 4.4)
    ax = fig.add_subplot()
    ax.plot([0, 1], [0, 1], linestyle="--", color=NEUTRAL, linewidth=0.8, label="perfectly calibrated")
    for name, c in curves.items():
        cal = c["calibration"]
        ax.plot(
            cal["mean_predicted"],
            cal["fraction_positive"],
            marker="o",
            markersize=3,
            linewidth=1.2,
            label=f"{name} (Brier {cal['brier']:.3f})",
        )
    ax.set_xlabel("mean predicted probability")
    ax.set_ylabel("fraction labelled correct")
    ax.set_title("Calibration")
    _legend_below(ax, len(curves) + 1)
    return fig


@_styled
def importances(values: dict[str, float], limit: int = 15) -> Figure | None:
    if not values:
        return None
    items = list(values.items())[:limit]
    fig = _figure(6, 0.32 * len(items) + 0.9)
    ax = fig.add_subplot()
    ax.barh([k for k, _ in items], [v for _, v in items], color=PALETTE[4])
    ax.invert_yaxis()
    ax.set_title("Feature importances")
    return fig


@_styled
def score_distribution(scores: list[tuple[float, bool | None]], threshold: float | None) -> Figure | None:
    if not scores:
        return None
    fig = _figure(6, 2.8)
    ax = fig.add_subplot()
    bins = [i / 20 for i in range(21)]
    groups = [("labelled correct", GOOD, True), ("labelled wrong", BAD, False), ("unlabelled", NEUTRAL, None)]
    data = [[s for s, lb in scores if lb is want] for _, _, want in groups]
    present = [(g, d) for g, d in zip(groups, data, strict=True) if d]
    ax.hist(
        [d for _, d in present],
        bins=bins,
        stacked=True,
        color=[g[1] for g, _ in present],
        label=[g[0] for g, _ in present],
        edgecolor="white",
    )
    if threshold is not None:
        ax.axvline(threshold, color="black", linestyle="--", linewidth=0.8)
    ax.set_xlim(0, 1)
    _counts(ax.yaxis)
    ax.set_xlabel("verifier probability that the trajectory is correct")
    ax.set_ylabel("trajectories")
    ax.set_title("Verifier scores")
    ax.legend(fontsize=8)
    return fig


@_styled
def verifier_vs_judge(comparison: dict[str, Any]) -> Figure | None:
    acc = [
        ("verifier (CV)", comparison["verifier"]["cv_accuracy"], PALETTE[0]),
        ("LLM judge", comparison["judge"]["accuracy"], PALETTE[1]),
    ]
    cost = comparison["cost_per_1000"]
    bars = [
        ("verifier scoring", cost.get("verifier_scoring"), PALETTE[0]),
        ("verifier + alternates", cost.get("verifier_with_alternates"), PALETTE[2]),
        ("LLM judge", cost.get("judge"), PALETTE[1]),
    ]
    acc = [a for a in acc if a[1] is not None]
    bars = [b for b in bars if b[1]]
    if not acc and not bars:
        return None
    # panels only for what was measured: no empty "accuracy" axes
    panels = (["accuracy"] if acc else []) + (["tokens", "seconds"] if bars else [])
    ratios = {"accuracy": 1.0, "tokens": 1.5, "seconds": 1.5}
    fig = _figure(2.7 * len(panels) + 0.6, 2.6)
    axes = dict(
        zip(
            panels,
            fig.subplots(1, len(panels), width_ratios=[ratios[p] for p in panels], squeeze=False)[0],
            strict=True,
        )
    )
    if acc:
        ax = axes["accuracy"]
        b = ax.bar([a[0] for a in acc], [a[1] for a in acc], color=[a[2] for a in acc])
        ax.bar_label(b, fmt="%.2f", fontsize=8)
        ax.set_ylim(0, 1.1)
        ax.set_title("Accuracy on labels")
        ax.tick_params(axis="x", labelsize=7)
    if not bars:
        return fig
    names = [n for n, _, _ in bars]
    colours = [col for _, _, col in bars]
    tokens = [c.get("tokens_per_1000") or 0 for _, c, _ in bars]
    b = axes["tokens"].barh(names, tokens, color=colours)
    axes["tokens"].bar_label(
        b, labels=[_compact(t) if t else "0 (no LLM)" for t in tokens], fontsize=8, padding=2
    )
    axes["tokens"].xaxis.set_major_formatter(FuncFormatter(lambda v, _: _compact(v)))
    axes["tokens"].set_title("LLM tokens / 1,000")
    seconds = [c.get("seconds_per_1000") or 0 for _, c, _ in bars]
    ax = axes["seconds"]
    positive = [x for x in seconds if x > 0] or [1.0]
    # a log scale only where the bars span orders of magnitude (scoring vs LLM calls)
    if len(positive) > 1 and max(positive) / min(positive) >= 100:
        b = ax.barh(names, [max(x, 1e-3) for x in seconds], color=colours)
        ax.set_xscale("log")
        ax.set_xlim(min(positive) / 3, max(positive) * 30)
        ax.xaxis.set_major_locator(LogLocator(base=100))
        ax.xaxis.set_minor_formatter(NullFormatter())
    else:
        b = ax.barh(names, seconds, color=colours)
        ax.xaxis.set_major_formatter(FuncFormatter(lambda v, _: _compact(v)))
    ax.bar_label(b, labels=[_seconds(x) for x in seconds], fontsize=8, padding=2)
    ax.set_title("Seconds / 1,000")
    ax.set_yticks([])
    for key in ("tokens", "seconds"):
        axes[key].invert_yaxis()
        axes[key].margins(x=0.35)
        axes[key].tick_params(axis="y", labelsize=7)
    return fig


# -- evaluation ---------------------------------------------------------------------------------


@_styled
def evaluation_rates(configs: list[dict[str, Any]]) -> Figure | None:
    """One panel per match mode: each configuration's accuracy on tool names alone and, where
    measured (`<mode>_args`), on names and arguments."""
    if not configs:
        return None
    modes = [m for m in MATCH_MODES if any(m in c["rates"] or f"{m}_args" in c["rates"] for c in configs)]
    if not modes:
        return None
    cols = 2 if len(modes) > 1 else 1
    rows = (len(modes) + cols - 1) // cols
    fig = _figure(7.0, 2.3 * rows + 0.6)
    axes = fig.subplots(rows, cols, squeeze=False, sharey=True).ravel()
    names = [f"{c['config']}\n{c['eval_id'][:8]}" for c in configs]
    xs = list(range(len(configs)))
    for i, (ax, mode) in enumerate(zip(axes, modes)):
        for offset, key, label, colour in (
            (-0.2, mode, "tool names", PALETTE[0]),
            (0.2, f"{mode}_args", "names and arguments", PALETTE[1]),
        ):
            values = [c["rates"].get(key) for c in configs]
            if all(v is None for v in values):
                continue
            bars = ax.bar(
                [x + offset for x in xs], [v or 0 for v in values], width=0.38, label=label, color=colour
            )
            ax.bar_label(bars, labels=["" if v is None else f"{v:.2f}" for v in values], fontsize=7)
        ax.set_title(f"{mode} match")
        ax.set_xticks(xs, names, fontsize=7)
        ax.set_ylim(0, 1.15)
        if i % cols == 0:
            ax.set_ylabel("accuracy")
    for ax in axes[len(modes) :]:
        ax.set_visible(False)
    handles, labels = axes[0].get_legend_handles_labels()
    fig.legend(handles, labels, loc="outside lower center", ncol=2, fontsize=8)
    return fig


# -- compare ------------------------------------------------------------------------------------


@_styled
def paired_bars(
    title: str,
    labels: list[str],
    a: list[float | None],
    b: list[float | None],
    names: tuple[str, str],
    xlabel: str = "",
) -> Figure | None:
    if not labels:
        return None
    fig = _figure(6, 0.5 * len(labels) + 1.0)
    ax = fig.add_subplot()
    ys = list(range(len(labels)))
    ax.barh([y - 0.2 for y in ys], [v or 0 for v in a], height=0.4, label=names[0], color=PALETTE[0])
    ax.barh([y + 0.2 for y in ys], [v or 0 for v in b], height=0.4, label=names[1], color=PALETTE[1])
    ax.set_yticks(ys, labels)
    ax.invert_yaxis()
    ax.set_xlabel(xlabel)
    ax.set_title(title)
    ax.legend(loc="upper center", bbox_to_anchor=(0.5, -0.14 if xlabel else -0.08), ncol=2, fontsize=8)
    return fig


def _legend_below(ax: Any, entries: int) -> None:
    ax.legend(fontsize=7, loc="upper center", bbox_to_anchor=(0.5, -0.18), ncol=2 if entries > 3 else 1)


def _seconds(s: float) -> str:
    return f"{s * 1000:.0f} ms" if s < 1 else f"{s:.1f} s"


def _compact(v: float) -> str:
    if v == 0:
        return "0"
    if v >= 1e6:
        return f"{v / 1e6:.1f}M"
    if v >= 1e3:
        return f"{v / 1e3:.1f}k"
    return f"{v:.3g}"


def render_figures(makers: dict[str, Callable[[], Figure | None]]) -> dict[str, str]:
    """Run each figure maker; figures with nothing to show are left out."""
    out = {}
    for name, make in makers.items():
        fig = make()
        if fig is not None:
            out[name] = data_uri(fig)
    return out


# -- cascade ------------------------------------------------------------------------------------


@_styled
def cascade_curve(points: list[dict[str, Any]]) -> Figure | None:
    """Accuracy on labelled rows against cumulative LLM tokens per 1,000 trajectories, one point
    per cascade step."""
    pts = [p for p in points if p.get("accuracy_all") is not None or p.get("accuracy") is not None]
    if not pts:
        return None
    fig = _figure(6.5, 3.2)
    ax = fig.add_subplot()
    x = [p["tokens_per_1000"] or 0 for p in pts]
    for key, label, colour in (
        ("accuracy", "decided rows", PALETTE[0]),
        ("accuracy_all", "all rows (verifier for the undecided)", PALETTE[1]),
    ):
        xs = [xi for xi, p in zip(x, pts) if p.get(key) is not None]
        ys = [p[key] for p in pts if p.get(key) is not None]
        ax.plot(xs, ys, marker="o", color=colour, label=label)
    right = max(x) * 0.7 if max(x) else 1.0
    for i, (xi, p) in enumerate(zip(x, pts)):
        y = p["accuracy"] if p.get("accuracy") is not None else p["accuracy_all"]
        # steps that cost nothing more sit on one point: stagger their labels
        ax.annotate(
            f"{p['step']} ({p['coverage']:.0%})",
            (xi, y),
            fontsize=7,
            xytext=(3 if xi < right else -3, -10 - 9 * i),
            textcoords="offset points",
            ha="left" if xi < right else "right",
        )
    ax.xaxis.set_major_formatter(FuncFormatter(lambda v, _: _compact(v)))
    ax.set_ylim(0, 1.05)
    ax.set_xlabel("cumulative LLM tokens per 1,000 trajectories")
    ax.set_ylabel("accuracy on labels")
    ax.set_title("Cascade: accuracy against cost (coverage in brackets)")
    ax.legend(fontsize=7, loc="lower right")
    return fig


@_styled
def learning_curve(points: list[dict[str, Any]]) -> Figure | None:
    if not points:
        return None
    fig = _figure(6, 3)
    ax = fig.add_subplot()
    for key, label, colour in (
        ("uncertain", "uncertainty first", PALETTE[0]),
        ("random", "random order", NEUTRAL),
    ):
        xs = [p["labels"] for p in points if p.get(key) is not None]
        ax.plot(xs, [p[key] for p in points if p.get(key) is not None], marker="o", color=colour, label=label)
    ax.set_ylim(0, 1.05)
    ax.set_xlabel("human labels")
    ax.set_ylabel("accuracy on the rest")
    ax.set_title("Active learning (simulated on labelled rows)")
    ax.legend(fontsize=7, loc="lower right")
    return fig
