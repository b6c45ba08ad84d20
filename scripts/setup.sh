#!/usr/bin/env bash
# Controller set-up, idempotent: the project's virtualenv with pinned packages.
# With --lab also what the throwaway test servers and the CPU vLLM build need
# (system packages, the cached root filesystem, the vLLM wheelhouse, the tiny model, and nginx and the
# docker CLI unpacked for the quoting tests).
set -euo pipefail
cd "$(dirname "$0")/.."

stamp=.venv/.requirements.sha256
want=$(sha256sum requirements.txt | cut -d' ' -f1)
if [ ! -x .venv/bin/python ] || [ "$(cat "$stamp" 2>/dev/null)" != "$want" ]; then
  python3 -m venv .venv
  .venv/bin/pip install -q -r requirements.txt
  echo "$want" > "$stamp"
fi

if [ "${1:-}" = "--lab" ]; then
  if [ "$(id -u)" != 0 ]; then
    echo "setup.sh --lab: needs root (apt-get, systemd-nspawn); skipping the lab set-up" >&2
    exit 0
  fi
  scripts/hostlab-deps.sh
  scripts/controller-tools.sh >/dev/null
  .venv/bin/python -m hostlab build >/dev/null
  scripts/wheelhouse.sh >/dev/null
  python=$(scripts/controller-vllm.sh)
  "$python" scripts/build_tiny_model.py "${VLLM_DEPLOY_CACHE:-/var/cache/vllm-deploy}/models/tiny-llama" >/dev/null
fi
