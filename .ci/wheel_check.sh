#!/usr/bin/env bash
# magv as a user installs it: build the wheel, install it NON-editable into a fresh virtual
# environment (dependencies from the package index, through pip's cache), and from a directory
# outside the repository check that
#   - the wheel holds every module and template of the repository, and no top-level package but magv;
#   - `magv --help` and `python -m magv --help` work;
#   - every prompt renders (read with importlib.resources from the installed package);
#   - `magv domain check retail` passes;
#   - a small `magv run` (generation and verifier stages) completes against the fake LLM server
#     of tests/fakellm.py, embeddings included (the wheel has no sentence-transformers).
# Usage: bash .ci/wheel_check.sh   (PYTHON=python3.11 to pick the interpreter; KEEP=1 keeps the temp dir)
set -euo pipefail
REPO="$(cd "$(dirname "$0")/.." && pwd)"
PYTHON="${PYTHON:-python3}"
WORK="$(mktemp -d "${TMPDIR:-/tmp}/magv-wheel.XXXXXX")"
FAKE_PID=""

cleanup() {
    if [ -n "$FAKE_PID" ]; then kill "$FAKE_PID" 2>/dev/null || true; wait "$FAKE_PID" 2>/dev/null || true; fi
    if [ "${KEEP:-0}" = 1 ]; then echo "wheel check: kept $WORK"; else rm -rf "$WORK"; fi
}
trap cleanup EXIT
step() { echo "wheel check: $*"; }
started=$SECONDS

step "building the wheel"
"$PYTHON" -m venv "$WORK/venv"
VENV="$WORK/venv"
"$VENV/bin/pip" install -q -c "$REPO/constraints.txt" --upgrade pip 2> >(grep -v "is ignored: it is neither" >&2)
# From a copy of the files git would commit: an in-tree build leaves build/ behind, whose stale
# modules would end up in the next wheel.
mkdir -p "$WORK/src"
(cd "$REPO" && git ls-files -co --exclude-standard -z | xargs -0 tar -cf - 2>/dev/null) | tar -xf - -C "$WORK/src"
"$VENV/bin/pip" wheel -q --no-deps -w "$WORK/dist" "$WORK/src" 2> >(grep -v "is ignored: it is neither" >&2)
WHEEL="$(ls "$WORK"/dist/magv-*.whl)"

step "comparing $(basename "$WHEEL") with the repository"
"$VENV/bin/python" - "$REPO" "$WHEEL" <<'EOF'
import sys, zipfile
from pathlib import Path

repo, wheel = Path(sys.argv[1]), sys.argv[2]
names = set(zipfile.ZipFile(wheel).namelist())
tops = {n.split("/")[0] for n in names if not n.split("/")[0].endswith(".dist-info")}
assert tops == {"magv"}, f"top-level entries besides magv in the wheel: {sorted(tops - {'magv'})}"
# Where each folder of the repository lands in the wheel (pyproject.toml's package-dir).
mapping = {"magv": "magv", "flows": "magv/flows", "prompts": "magv/agent_prompts"}
missing = []
for folder, target in mapping.items():
    for f in (repo / folder).rglob("*"):
        if f.is_file() and "__pycache__" not in f.parts and f.suffix in (".py", ".j2", ".yaml", ".jsonl", ".md"):
            inside = f"{target}/{f.relative_to(repo / folder).as_posix()}"
            if inside not in names:
                missing.append(inside)
assert not missing, f"not in the wheel (add the package to pyproject.toml): {missing}"
print(f"  {len(names)} files, top level: magv")
EOF

step "installing it into a fresh venv"
"$VENV/bin/pip" install -q -c "$REPO/constraints.txt" "$WHEEL" 2> >(grep -v "is ignored: it is neither" >&2)
if "$VENV/bin/pip" list --format=freeze | grep -i '^nvidia'; then
    echo "a CPU install pulled CUDA libraries (above)"; exit 1
fi

# Everything below runs outside the repository, so nothing can be imported from the checkout.
RUN="$WORK/run"
mkdir -p "$RUN"
cd "$RUN"
export PREFECT_HOME="$WORK/prefect" PREFECT_SERVER_ANALYTICS_ENABLED=false PREFECT_LOGGING_LEVEL=WARNING
export HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1

step "magv --help, python -m magv --help"
"$VENV/bin/magv" --help >/dev/null
"$VENV/bin/python" -m magv --help >/dev/null

step "rendering every prompt"
"$VENV/bin/python" - "$VENV" <<'EOF'
import sys
from pathlib import Path

import magv
from magv.agents.responder import system_prompt
from magv.domains import load_domain
from magv.prompts import load_prompt, prompts_dir

site = Path(sys.argv[1]).resolve()
assert site in Path(magv.__file__).resolve().parents, f"magv imported from {magv.__file__}, not the venv"
assert site in Path(str(prompts_dir())).resolve().parents, f"prompts read from {prompts_dir()}"
domain = load_domain("retail")
seeds = domain.seeds()
target, example = seeds[0], seeds[1]
rendered = {
    "investigator": load_prompt("investigator").render(
        domain_description=domain.description, tools=domain.tools, example_question=example.question,
        example_calls=example.trajectory, target_calls=target.trajectory, n=3,
    ),
    "responder": system_prompt(domain, "json")[0] + system_prompt(domain, "native")[0],
    "reverse": load_prompt("reverse").render(
        domain_description=domain.description, response="Your order has shipped.", base_question=None, k=2
    ),
    "judge": load_prompt("judge").render(question=target.question, steps=["get_order(...) -> ok"], response="Done."),
}
shipped = {f.name.removesuffix(".j2") for f in prompts_dir().iterdir() if f.name.endswith(".j2")}
assert set(rendered) == shipped, f"prompts without a render check: {shipped ^ set(rendered)}"
for name, text in rendered.items():
    assert len(text) > 100, (name, text)
    print(f"  {name}: {len(text)} characters, hash {load_prompt(name).hash}")
EOF

step "magv domain check retail"
"$VENV/bin/magv" domain check retail | tail -n 1

step "starting the fake LLM server (tests/fakellm.py, agents script)"
# A copy of tests/ outside the repository: the server imports magv too, and must get the wheel's.
mkdir -p "$WORK/fake"
cp -r "$REPO/tests" "$WORK/fake/tests"
(cd "$WORK/fake" && exec "$VENV/bin/python" -m tests.fakellm --script agents --port 0) >"$WORK/fake.log" 2>&1 &
FAKE_PID=$!
URL=""
for _ in $(seq 1 100); do
    URL="$(sed -n 's/^fakellm listening on //p' "$WORK/fake.log")"
    [ -n "$URL" ] && break
    kill -0 "$FAKE_PID" 2>/dev/null || { cat "$WORK/fake.log"; exit 1; }
    sleep 0.2
done
[ -n "$URL" ] || { echo "the fake LLM server did not start"; cat "$WORK/fake.log"; exit 1; }

step "magv run against $URL"
export MAGV_LLM__ENDPOINTS="[\"$URL\"]" MAGV_EMBEDDINGS__BACKEND=endpoint MAGV_EMBEDDINGS__ENDPOINT="$URL"
# Sized so that gold labels have both classes and the verifier trains (as tests/test_pipeline.py does).
"$VENV/bin/magv" run --targets 6 --per-target 4 --questions 12 --runs 3 --alternates 2 --json >"$WORK/run.json"
"$VENV/bin/python" - "$WORK/run.json" <<'EOF'
import json, sys

result = json.load(open(sys.argv[1]))
stages = result["stages"]
want = ["generate", "select", "respond", "reverse", "respond_alternates", "features", "gold_labels", "train", "score"]
assert list(stages) == want, list(stages)
bad = {name: s for name, s in stages.items() if s.get("failed")}
assert not bad, f"failed stages: {bad}"
assert stages["respond"]["written"] > 0 and stages["score"]["written"] > 0, stages
print(f"  {result.get('status', 'completed')}: " + ", ".join(f"{n} {s['written']}" for n, s in stages.items()))
EOF
"$VENV/bin/magv" db info >/dev/null
step "passed in $((SECONDS - started)) s"
