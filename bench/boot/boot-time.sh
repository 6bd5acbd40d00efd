#!/usr/bin/env bash
# Boot to init, side by side: SharpVM's emulated CPU (with the kernel decompressed on the host, the same
# with the block translator off, and with the guest decompressing itself) and QEMU TCG (-M pc and -M microvm), on the same kernel,
# initramfs and kernel command line. For every run: wall time from process start to the init's
# SHARPVM-GUEST-READY line ("marker") and to the end (the guest powers off after `uname -a`), and the
# process's peak RSS (wait4's ru_maxrss). Prints every run, then medians and ratios to QEMU -M pc.
#
#   bench/boot/boot-time.sh [runs]        (default 3 runs of each; publishes the CLI as run.sh does first)
#   EXTRA_CMDLINE=cryptomgr.notests bench/boot/boot-time.sh   (same, without the kernel's crypto self-tests)
#
# Our machines are shared: the configurations take turns within each round, so compare medians of
# one invocation, never across invocations.
set -euo pipefail
cd "$(dirname "$0")/../.."
RUNS=${1:-3}
GUEST=${XDG_CACHE_HOME:-$HOME/.cache}/sharpvm/guest
KERNEL=$GUEST/vmlinuz
INITRD=$GUEST/initramfs.cpio.gz
[[ -f $KERNEL && -f $INITRD ]] || { echo "default guest missing: run guest/build-default-guest.sh" >&2; exit 1; }
command -v qemu-system-x86_64 >/dev/null || { echo "qemu-system-x86_64 missing: apt-get install qemu-system-x86" >&2; exit 1; }
# EXTRA_CMDLINE (e.g. "cryptomgr.notests") is appended for every configuration.
CMDLINE="console=ttyS0 panic=-1 i8042.noaux i8042.nomux i8042.nopnp${EXTRA_CMDLINE:+ $EXTRA_CMDLINE}"
GUEST_CMD="uname -a"

# The same build run.sh runs: published, ReadyToRun (less JIT work at start-up).
dotnet publish src/SharpVM.Cli -c Release -o artifacts/sharpvm --nologo -v quiet >/dev/null
SHARPVM=artifacts/sharpvm/sharpvm

QEMU=(qemu-system-x86_64 -accel tcg -m 512 -nographic -no-reboot -kernel "$KERNEL" -initrd "$INITRD" -append "$CMDLINE -- $GUEST_CMD")
# microvm: acpi=off because with ACPI (QEMU 7.2's default for microvm) this kernel under TCG gets no
# timer interrupt after "APIC: Switch to symmetric I/O mode setup" and hangs (no HPET/PM timer/kvmclock
# to calibrate against, PIT not routed); pit/pic/rtc on for the same reason. Without ACPI microvm has
# no power-off device: `poweroff -f` ends in "reboot: System halted" and QEMU keeps running, so the
# driver below counts that line as the end and kills QEMU (see README).
MICROVM=microvm,x-option-roms=off,isa-serial=on,pit=on,pic=on,rtc=on,acpi=off

python3 - "$RUNS" <<PY
import os, subprocess, sys, time, statistics, signal

runs = int(sys.argv[1])
SHARPVM_RUN = ["$SHARPVM", "run", "--accel", "emu", "--timeout", "300", "--cmdline", "$CMDLINE", "--", *"$GUEST_CMD".split()]
# (name, argv, extra environment): the interpreter-only run shows what the block translator brings.
configs = [
    ("SharpVM emu, host decompress", SHARPVM_RUN, {}),
    ("SharpVM emu, interpreter only", SHARPVM_RUN, {"SHARPVM_EMU_TRANSLATE": "off"}),
    ("SharpVM emu, guest decompress", SHARPVM_RUN[:4] + ["--guest-decompress"] + SHARPVM_RUN[4:], {}),
    ("QEMU TCG -M pc", [$(printf '"%s", ' "${QEMU[@]}") "-M", "pc"], {}),
    ("QEMU TCG -M microvm", [$(printf '"%s", ' "${QEMU[@]}") "-M", "$MICROVM"], {}),
]
MARKER, HALTED = b"SHARPVM-GUEST-READY", b"reboot: System halted"

def run(argv, env):
    """Wall seconds to the marker and to the end, peak RSS in MiB, exit status, whether it ended by halting."""
    start = time.monotonic()
    p = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, env={**os.environ, **env})
    marker = None; halted = False; seen = b""
    while True:
        chunk = os.read(p.stdout.fileno(), 65536)
        if not chunk: break
        seen = (seen + chunk)[-4096:]
        if marker is None and MARKER in seen: marker = time.monotonic() - start
        if HALTED in seen and not halted:
            halted = True
            p.send_signal(signal.SIGTERM)  # microvm without ACPI cannot power off: the halt is the end
            end = time.monotonic() - start
    _, status, usage = os.wait4(p.pid, 0)
    if not halted: end = time.monotonic() - start
    p.returncode = os.waitstatus_to_exitcode(status)
    return marker, end, usage.ru_maxrss / 1024, p.returncode, halted

results = {name: [] for name, _, _ in configs}
for i in range(1, runs + 1):
    for name, argv, env in configs:
        marker, end, rss, code, halted = run(argv, env)
        ok = marker is not None and (code == 0 or halted)
        results[name].append((marker, end, rss, ok))
        m = f"{marker:6.2f} s" if marker is not None else "    NA  "
        print(f"run {i}  {name:<30} marker {m}   end {end:6.2f} s   peak RSS {rss:6.0f} MiB   "
              f"{'halted (killed)' if halted else f'exit {code}'}{'' if ok else '   FAILED'}", flush=True)

def med(name, k):
    values = [r[k] for r in results[name] if r[3] and r[k] is not None]
    return statistics.median(values) if values else float("nan")

base = "QEMU TCG -M pc"
print()
print(f"medians of {runs} runs; ratios are to {base} (lower is better)")
print(f"| configuration | marker | end | peak RSS | marker / pc | end / pc | RSS / pc |")
print(f"|---|---:|---:|---:|---:|---:|---:|")
for name, _, _ in configs:
    mk, en, rs = med(name, 0), med(name, 1), med(name, 2)
    print(f"| {name} | {mk:.2f} s | {en:.2f} s | {rs:.0f} MiB | {mk / med(base, 0):.2f}x | {en / med(base, 1):.2f}x | {rs / med(base, 2):.2f}x |")
failed = sum(1 for v in results.values() for r in v if not r[3])
if failed: print(f"{failed} run(s) FAILED (no marker or a non-zero exit): left out of the medians"); sys.exit(1)
PY
