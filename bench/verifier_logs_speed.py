"""Scoring logs: `magv verify score --input` on a file of conversations, and one lone conversation
in the service's path, for a model that reads no embedding feature, measured in one run.

Setup (not timed): a labelled log file in magv's import format (default the committed real-model
set, `data/fixtures/real_dataset.jsonl`; `--logs` another, with `--tools` its OpenAI tool specs)
featurized and a verifier (`--model`, default XGBoost) trained on every feature it reads but the
embedding ones (`features.needs_embeddings`), saved to a temporary file.

Timed:

* `magv verify score --input FILE --output OUT --model-file M` in its own process, as a user runs
  it: the process's wall time, and the command's own seconds (load, predict, write) from its
  `--json` summary; best of `--reps`;
* a lone conversation through the service's own path without HTTP (`parse_request`, then
  `score_entries`: featurize and predict): median and p99 over every conversation of the file,
  each sent alone, repeated `--reps` times.

    .venv/bin/python bench/verifier_logs_speed.py [--logs FILE --tools tools.json --reps 5]
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import BIN, REPO, quiet_env, write_result  # noqa: E402

DEFAULT_LOGS = REPO / "data" / "fixtures" / "real_dataset.jsonl"


def train(lines, tools, path: Path, label: str) -> list[str]:
    """Verifier `label` (a candidate name of `verify train`) on the base runs' features without
    embeddings (and their documents, for a text model); the feature names it reads."""
    import numpy as np

    from magv.verify.document import documents
    from magv.verify.features import FEATURE_NAMES, FEATURE_VERSION, TrajectoryFeaturizer, needs_embeddings
    from magv.verify.models import candidate_features, make_verifier, model_input, save_model

    labelled = [x for x in lines if x.label is not None and x.meta.get("origin") != "alternate"]
    plain = [n for n in FEATURE_NAMES if not needs_embeddings([n])]
    names = candidate_features(label, plain)
    trajectories, keys = [x.trajectory for x in labelled], [x.key for x in labelled]
    X = TrajectoryFeaturizer(None, tools.writes).transform(trajectories, keys)
    verifier = make_verifier(label)
    X = model_input(verifier, X[:, [FEATURE_NAMES.index(n) for n in names]], documents(trajectories))
    y = np.array([int(x.label) for x in labelled])
    verifier.fit(X, y, groups=keys)
    save_model(path, verifier, names, FEATURE_VERSION, model_id="bench-logs", name=label)
    return names


def score_input(logs: Path, tools_file: Path | None, model: Path, out: Path) -> dict:
    cmd = [str(BIN / "magv"), "verify", "score", "--input", str(logs), "--output", str(out), "--model-file",
           str(model), "--json"]  # fmt: skip
    if tools_file is not None:
        cmd += ["--tools", str(tools_file)]
    started = time.perf_counter()
    proc = subprocess.run(cmd, env=quiet_env(), capture_output=True, text=True, cwd=out.parent)
    wall = time.perf_counter() - started
    if proc.returncode != 0:
        raise SystemExit(f"magv verify score failed ({proc.returncode}):\n{proc.stderr[-3000:]}")
    summary = json.loads(proc.stdout)
    return {"process_wall_s": wall, "seconds": summary["seconds"], "scored": summary["scored"]}


def repeated(logs: Path, copies: int, out: Path) -> Path:
    """The file itself, or its lines `copies` times, each copy's question and group ids made its own."""
    if copies <= 1:
        return logs
    lines = [json.loads(line) for line in logs.read_text().splitlines() if line.strip()]
    with out.open("w") as f:
        for k in range(copies):
            for x in lines:
                ids = {key: f"{x[key]}#{k}" for key in ("question_id", "group_id", "id") if key in x}
                f.write(json.dumps({**x, **ids}) + "\n")
    return out


def lone(lines, scorer, errors, reps: int) -> dict:
    """Each conversation of the file alone through the service's path: per-request seconds."""
    from magv.service.app import score_entries
    from magv.service.payload import parse_request

    bodies = [json.dumps({"messages": x.messages}).encode() for x in lines]
    for body in bodies[:20]:  # warm-up: first-call costs
        score_entries(scorer, parse_request(body, 1, errors)[0])
    times, probabilities = [], set()
    for _ in range(reps):
        for body in bodies:
            started = time.perf_counter()
            verdicts = score_entries(scorer, parse_request(body, 1, errors)[0])
            times.append(time.perf_counter() - started)
            probabilities.add(verdicts[0].probability)
    q = statistics.quantiles(times, n=100, method="inclusive")
    return {"requests": len(times), "p50_ms": 1000 * statistics.median(times), "p99_ms": 1000 * q[98],
            "distinct_probabilities": len(probabilities), "conversations": len(bodies)}  # fmt: skip


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--logs", type=Path, default=DEFAULT_LOGS, help="labelled JSONL in magv's import format")
    p.add_argument("--tools", type=Path, default=None, help="the logs' OpenAI tool specs with writes")
    p.add_argument("--domain", default=None, help="a magv domain whose tools the logs use")
    p.add_argument("--model", default="xgboost",
                   help="the verifier, a candidate of `verify train`: xgboost, text, 'agreement + text', ...")  # fmt: skip
    p.add_argument("--reps", type=int, default=5)
    p.add_argument("--copies", type=int, default=1,
                   help="score a file of the conversations repeated this many times (each copy its own questions)")  # fmt: skip
    args = p.parse_args()
    if str(REPO) not in sys.path:
        sys.path.insert(0, str(REPO))
    from magv.config import load_settings
    from magv.interchange import read_import_file
    from magv.verify.scoring import load_scorer
    from magv.verify.toolspec import log_tools

    tools = log_tools(args.domain, args.tools)
    lines = read_import_file(args.logs, errors=tools.errors)
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        model = work / "verifier.skops"
        names = train(lines, tools, model, args.model)
        logs = repeated(args.logs, args.copies, work / "input.jsonl")
        runs = [score_input(logs, args.tools, model, work / "out.jsonl") for _ in range(args.reps)]
        best = min(runs, key=lambda r: r["process_wall_s"])
        scorer = load_scorer(load_settings(), model_file=model, tools=tools)
        alone = lone(lines, scorer, tools.errors, args.reps)
    n = best["scored"]
    result = {"settings": {k: str(v) for k, v in vars(args).items()}, "model": args.model, "features": len(names),
              "score_input": {"runs": runs, "best": best}, "lone": alone}  # fmt: skip
    path = write_result("verifier_logs_speed", result)
    s = best["seconds"]
    print(f"model {args.model}, {len(names)} features")
    print(f"verify score --input, {n} conversations: process {best['process_wall_s']:.2f} s (load {s['load']:.3f} s, "
          f"predict {s['predict']:.3f} s, write {s['write']:.3f} s)")  # fmt: skip
    print(f"a lone conversation in the service's path: p50 {alone['p50_ms']:.2f} ms, p99 {alone['p99_ms']:.2f} ms "
          f"over {alone['requests']} requests; {alone['distinct_probabilities']} distinct probabilities for "
          f"{alone['conversations']} conversations")  # fmt: skip
    print(f"results written to {path.relative_to(path.parents[2])}")
    print(f"FIGURES verify score --input {n} conversations: {best['process_wall_s']:.2f} s process, "
          f"{s['load'] + s['predict'] + s['write']:.3f} s in the command; lone conversation p50 "
          f"{alone['p50_ms']:.2f} ms / p99 {alone['p99_ms']:.2f} ms (target <= 5 ms)")  # fmt: skip


if __name__ == "__main__":
    main()
