#!/usr/bin/env bash
# Wall time from start to SHARPVM-GUEST-READY (the default guest's init is up) and to the end of the VM
# (poweroff), for SharpVM's emulated CPU and for QEMU TCG, on the same kernel, initramfs and command line.
#
#   bench/boot/boot-time.sh [runs]        (default 3 runs each; builds the CLI in Release first)
#   EXTRA_CMDLINE=cryptomgr.notests bench/boot/boot-time.sh   (same, without the kernel's crypto self-tests)
#
# Our machines are shared: run both side by side in one invocation and compare medians, never across runs.
set -euo pipefail
cd "$(dirname "$0")/../.."
RUNS=${1:-3}
GUEST=${XDG_CACHE_HOME:-$HOME/.cache}/sharpvm/guest
KERNEL=$GUEST/vmlinuz
INITRD=$GUEST/initramfs.cpio.gz
[[ -f $KERNEL && -f $INITRD ]] || { echo "default guest missing: run guest/build-default-guest.sh" >&2; exit 1; }
# EXTRA_CMDLINE (e.g. "cryptomgr.notests") is appended for both; sharpvm then gets --cmdline too.
CMDLINE_BASE="console=ttyS0 panic=-1 i8042.noaux i8042.nomux i8042.nopnp${EXTRA_CMDLINE:+ $EXTRA_CMDLINE}"
GUEST_CMD="uname -a"

dotnet build -c Release src/SharpVM.Cli -v q -nologo >/dev/null
SHARPVM=src/SharpVM.Cli/bin/Release/net10.0/linux-x64/sharpvm

# time_to_marker LABEL COMMAND...: prints "LABEL marker_s total_s exit_status"
time_to_marker() {
    local label=$1; shift
    local start marker=NA status
    start=$(date +%s.%N)
    while IFS= read -r line; do
        if [[ $marker == NA && $line == *SHARPVM-GUEST-READY* ]]; then
            marker=$(echo "$(date +%s.%N) - $start" | bc)
        fi
    done < <("$@" 2>&1; echo "EXIT-STATUS=$?")
    status=$?
    local total
    total=$(echo "$(date +%s.%N) - $start" | bc)
    printf '%-8s marker %6.2f s   total %6.2f s\n' "$label" "$marker" "$total"
}

for ((i = 1; i <= RUNS; i++)); do
    time_to_marker sharpvm "$SHARPVM" run --accel emu --timeout 300 --cmdline "$CMDLINE_BASE" -- $GUEST_CMD
    time_to_marker qemu qemu-system-x86_64 -accel tcg -M pc -m 512 -nographic -no-reboot \
        -kernel "$KERNEL" -initrd "$INITRD" -append "$CMDLINE_BASE -- $GUEST_CMD"
done
