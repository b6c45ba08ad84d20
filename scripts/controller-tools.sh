#!/usr/bin/env bash
# Binaries some tests run on the controller, unpacked from Debian's packages into the cache
# (dpkg -x): nginx (the quoting tests read nginx strings back through it), the docker CLI
# (docker's --env-file reader, against a fake daemon), and Prometheus's own checkers for the
# monitoring tests: promtool (check config/rules/metrics, test rules), amtool (check-config) and
# the prometheus server (expressions evaluated against scraped metrics). Unpacked rather than
# installed, so no service starts on the controller. Tools already on PATH are used as they are.
# Idempotent. Prints the directory to prepend to PATH.
set -euo pipefail
cache=${VLLM_DEPLOY_CACHE:-/var/cache/vllm-deploy}/tools
bin="$cache/bin"
mkdir -p "$bin"

# command -> package:path inside the package
declare -A need=([nginx]=nginx:usr/sbin/nginx [docker]=docker.io:usr/bin/docker
                 [promtool]=prometheus:usr/bin/promtool [prometheus]=prometheus:usr/bin/prometheus
                 [amtool]=prometheus-alertmanager:usr/bin/amtool)
declare -A unpacked=()
trap 'for dir in "${unpacked[@]}"; do rm -rf "$dir"; done' EXIT
for cmd in "${!need[@]}"; do
  [ -x "$bin/$cmd" ] && continue
  command -v "$cmd" >/dev/null 2>&1 && continue
  pkg=${need[$cmd]%%:*}; path=${need[$cmd]#*:}
  if [ -z "${unpacked[$pkg]:-}" ]; then  # one download per package, however many commands it gives
    work=$(mktemp -d)
    unpacked[$pkg]=$work
    (cd "$work" && apt-get download -qq "$pkg" >/dev/null 2>&1) || { apt-get update -qq && (cd "$work" && apt-get download -qq "$pkg" >/dev/null); }
    dpkg -x "$work"/"$pkg"_*.deb "$work/root"
  fi
  install -m 0755 "${unpacked[$pkg]}/root/$path" "$bin/$cmd"
done
echo "$bin"
