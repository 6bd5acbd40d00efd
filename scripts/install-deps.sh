#!/usr/bin/env bash
# Installs what SharpVM's build, tests and default guest need on a fresh Debian 12 machine.
# Idempotent: does nothing for what is already there. Needs root for apt-get (CI runs as root).
set -euo pipefail

need_pkgs=()
command -v dotnet >/dev/null || { echo "install-deps: the .NET 10 SDK (dotnet) is required and was not found on PATH" >&2; exit 1; }
command -v gcc >/dev/null || need_pkgs+=(gcc)
[ -f /usr/include/linux/kvm.h ] || need_pkgs+=(linux-libc-dev)
{ command -v qemu-img && command -v qemu-io; } >/dev/null || need_pkgs+=(qemu-utils)
command -v cpio >/dev/null || need_pkgs+=(cpio)

if [ ${#need_pkgs[@]} -gt 0 ]; then
  echo "install-deps: installing ${need_pkgs[*]}"
  SUDO=""; [ "$(id -u)" -eq 0 ] || SUDO="sudo"
  export DEBIAN_FRONTEND=noninteractive
  if ! $SUDO apt-get install -y --no-install-recommends "${need_pkgs[@]}" >/tmp/sharpvm-apt.log 2>&1; then
    $SUDO apt-get update >>/tmp/sharpvm-apt.log 2>&1
    $SUDO apt-get install -y --no-install-recommends "${need_pkgs[@]}" >>/tmp/sharpvm-apt.log 2>&1 \
      || { echo "install-deps: apt-get install ${need_pkgs[*]} failed; see /tmp/sharpvm-apt.log" >&2; exit 1; }
  fi
fi
