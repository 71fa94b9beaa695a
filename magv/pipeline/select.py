"""select: keep a diverse, balanced subset of the generated questions (MAG-V's filtering step).

Embed, drop near-duplicates (cosine above a threshold), then cluster the questions of each target
trajectory and keep the one nearest each cluster centre, with the total split evenly across target
trajectories. Every dropped question records why. Seeds are always kept. It runs where the store is
(one embedding batch, no agents), so it has no work items.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence
from typing import TYPE_CHECKING

import numpy as np
from sklearn.cluster import KMeans
from sklearn.decomposition import PCA

from magv.pipeline.base import StageReport
from magv.pipeline.generate import seed_questions, target_seeds

if TYPE_CHECKING:
    from magv.store import Store


def quotas(sizes: dict[str, int], total: int) -> dict[str, int]:
    """Split `total` across groups as evenly as their sizes allow (a small group's leftover goes to others)."""
    quota = {g: 0 for g in sizes}
    remaining = total
    open_groups = sorted(g for g, n in sizes.items() if n > 0)
    while remaining > 0 and open_groups:
        share, extra = divmod(remaining, len(open_groups))
        given = 0
        for i, g in enumerate(open_groups):
            want = share + (1 if i < extra else 0)
            take = min(want, sizes[g] - quota[g])
            quota[g] += take
            given += take
        remaining -= given
        open_groups = [g for g in open_groups if quota[g] < sizes[g]]
        if given == 0:
            break
    return quota


def select(
    ids: Sequence[str],
    groups: Sequence[str],
    embeddings: np.ndarray,
    target_count: int,
    threshold: float = 0.95,
    seed: int = 0,
) -> list[dict]:
    """One row per question: question_id, kept, reason, cluster, x, y.

    `groups` is each question's target trajectory; `embeddings` are L2-normalised rows.
    """
    n = len(ids)
    if n == 0:
        return []
    emb = np.asarray(embeddings, dtype=np.float32)
    rows = [
        {"question_id": ids[i], "kept": False, "reason": "", "cluster": None, "x": 0.0, "y": 0.0}
        for i in range(n)
    ]
    coords = _map_2d(emb, seed)
    for i in range(n):
        rows[i]["x"], rows[i]["y"] = float(coords[i, 0]), float(coords[i, 1])

    # Near-duplicates: greedy in input order, so the first phrasing of a question survives.
    survivors: list[int] = []
    for i in range(n):
        if survivors:
            sims = emb[survivors] @ emb[i]
            j = int(np.argmax(sims))
            if sims[j] >= threshold:
                rows[i]["reason"] = (
                    f"near-duplicate of {ids[survivors[j]]} (cosine {sims[j]:.3f} >= {threshold})"
                )
                continue
        survivors.append(i)

    by_group: dict[str, list[int]] = defaultdict(list)
    for i in survivors:
        by_group[groups[i]].append(i)
    quota = quotas({g: len(m) for g, m in by_group.items()}, target_count)
    next_cluster = 0
    for g in sorted(by_group):
        members = by_group[g]
        k = quota[g]
        if k == 0:
            for i in members:
                rows[i]["reason"] = "over the target count (its trajectory's quota is 0)"
            continue
        if k >= len(members):
            labels, keep = list(range(len(members))), set(range(len(members)))
        else:
            km = KMeans(n_clusters=k, random_state=seed, n_init=4).fit(emb[members])
            labels = km.labels_.tolist()
            dist = np.linalg.norm(emb[members] - km.cluster_centers_[km.labels_], axis=1)
            keep = set()
            for c in range(k):
                in_c = [m for m in range(len(members)) if labels[m] == c]
                if in_c:
                    keep.add(min(in_c, key=lambda m: dist[m]))
        for m, i in enumerate(members):
            rows[i]["cluster"] = next_cluster + labels[m]
            if m in keep:
                rows[i]["kept"] = True
                rows[i]["reason"] = "nearest to its cluster centre"
            else:
                rows[i]["reason"] = f"not nearest to the centre of cluster {next_cluster + labels[m]}"
        next_cluster += max(labels) + 1 if labels else 0
    return rows


def _map_2d(emb: np.ndarray, seed: int) -> np.ndarray:
    if len(emb) < 3:
        return np.zeros((len(emb), 2))
    return PCA(n_components=2, random_state=seed).fit_transform(emb)


def run(store: Store, ctx, embedder) -> StageReport:
    """Select among the investigator's questions and write every decision (kept or why not)."""
    report = StageReport("select")
    domain = ctx.domain()
    p = ctx.settings.pipeline
    store.add_questions(seed_questions(domain.name, target_seeds(domain.seeds(), p.max_targets)))
    decided = {s["question_id"] for s in store.selections()}
    seeds = store.questions(domain.name, origin="seed")
    generated = store.questions(domain.name, origin="investigator")
    report.planned = len(generated) + len(seeds)
    rows = [
        {"question_id": q.id, "kept": True, "reason": "seed", "cluster": None, "x": 0.0, "y": 0.0}
        for q in seeds
        if q.id not in decided
    ]
    if p.min_quality:  # a question that failed its checks (magv/quality.py) is not a test of the assistant
        failed = {
            c["question_id"]: c["reasons"] for c in store.question_checks(domain.name) if not c["passed"]
        }
        rows += [
            {
                "question_id": q.id,
                "kept": False,
                "cluster": None,
                "x": 0.0,
                "y": 0.0,
                "reason": "failed its checks: " + "; ".join(failed[q.id])[:300],
            }
            for q in generated
            if q.id in failed and q.id not in decided
        ]
        generated = [q for q in generated if q.id not in failed]
    if generated and any(q.id not in decided for q in generated):
        from magv.llm.embeddings import embed_cached

        # kept in the store: the features stage embeds the same questions again
        vectors = embed_cached(store, embedder, [q.text for q in generated])
        picked = select(
            [q.id for q in generated],
            [q.seed_id or "" for q in generated],
            vectors,
            target_count=p.questions,
            threshold=p.dedup_threshold,
            seed=p.seed,
        )
        rows += [r for r in picked if r["question_id"] not in decided]
    with store.transaction():
        report.written = store.add_selections(rows)
    report.done = report.planned
    return report
