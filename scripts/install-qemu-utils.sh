#!/bin/sh
# The storage interop tests need the real qemu-img and qemu-io (Debian 12: qemu-utils 7.2).
set -e
command -v qemu-img >/dev/null 2>&1 && command -v qemu-io >/dev/null 2>&1 && exit 0
apt-get update
apt-get install -y qemu-utils
