#!/usr/bin/env bash
# System packages the throwaway test-server lab needs (hostlab): debootstrap builds the
# Debian root filesystem, systemd-nspawn boots it, zstd packs the cache, iproute2 wires the network,
# util-linux gives each guest its own time namespace, njs checks the gateway's router script. Idempotent: apt runs only when a tool is missing.
set -euo pipefail

# command -> package that provides it
declare -A need=(
  [debootstrap]=debootstrap
  [systemd-nspawn]=systemd-container
  [zstd]=zstd
  [ip]=iproute2
  [unshare]=util-linux
  [ssh]=openssh-client
  [ssh-keygen]=openssh-client
  [njs]=njs
)

missing=()
for cmd in "${!need[@]}"; do
  command -v "$cmd" >/dev/null 2>&1 || missing+=("${need[$cmd]}")
done
# debian-archive-keyring lets debootstrap verify the Release file.
[ -e /usr/share/keyrings/debian-archive-keyring.gpg ] || missing+=(debian-archive-keyring)

[ ${#missing[@]} -eq 0 ] && exit 0

if [ "$(id -u)" != 0 ]; then
  echo "hostlab-deps.sh: missing ${missing[*]}; run as root to install them" >&2
  exit 1
fi
mapfile -t pkgs < <(printf '%s\n' "${missing[@]}" | sort -u)
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq
apt-get install -y -qq --no-install-recommends "${pkgs[@]}" >/dev/null
echo "hostlab-deps.sh: installed ${pkgs[*]}"
