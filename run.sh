#!/usr/bin/env bash
# SharpVM's main job: build it (ReadyToRun), report the host, and boot the default guest.
# Until the Linux-boot work lands, the default guest is the built-in micro-guest on /dev/kvm.
set -euo pipefail
cd "$(dirname "$0")"
./scripts/install-deps.sh
dotnet publish src/SharpVM.Cli -c Release -o artifacts/sharpvm --nologo -v quiet
./artifacts/sharpvm/sharpvm info
./artifacts/sharpvm/sharpvm demo --cpus 2 --stats "$@"
