#!/usr/bin/env bash
# SharpVM's main job: install what is needed, build SharpVM (ReadyToRun), build the default guest
# (Debian's cloud kernel + a busybox initramfs, cached under ~/.cache/sharpvm), and boot it to a shell
# on this terminal. Ctrl-A x quits. Extra arguments go to `sharpvm run`, e.g. ./run.sh -- uname -a
set -euo pipefail
cd "$(dirname "$0")"
./scripts/install-deps.sh
./guest/build-default-guest.sh >/dev/null
dotnet publish src/SharpVM.Cli -c Release -o artifacts/sharpvm --nologo -v quiet
exec ./artifacts/sharpvm/sharpvm run "$@"
