#!/usr/bin/env bash
# Binaries some tests run on the controller, unpacked from Debian's packages into the cache
# (dpkg -x): nginx (the quoting tests read nginx strings back through it) and the docker CLI
# (docker's --env-file reader, against a fake daemon). Unpacked rather than installed, so no
# service starts on the controller. Tools already on PATH are used as they are. Idempotent.
# Prints the directory to prepend to PATH.
set -euo pipefail
cache=${VLLM_DEPLOY_CACHE:-/var/cache/vllm-deploy}/tools
bin="$cache/bin"
mkdir -p "$bin"

# command -> package:path inside the package
declare -A need=([nginx]=nginx:usr/sbin/nginx [docker]=docker.io:usr/bin/docker)
for cmd in "${!need[@]}"; do
  [ -x "$bin/$cmd" ] && continue
  command -v "$cmd" >/dev/null 2>&1 && continue
  pkg=${need[$cmd]%%:*}; path=${need[$cmd]#*:}
  work=$(mktemp -d)
  (cd "$work" && apt-get download -qq "$pkg" >/dev/null 2>&1) || { apt-get update -qq && (cd "$work" && apt-get download -qq "$pkg" >/dev/null); }
  dpkg -x "$work"/"$pkg"_*.deb "$work/root"
  install -m 0755 "$work/root/$path" "$bin/$cmd"
  rm -rf "$work"
done
echo "$bin"
