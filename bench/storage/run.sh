#!/bin/bash
# sharpvm img bench/convert vs qemu-img on the same images and parameters, alternating, RUNS times each;
# prints medians. Usage: bench/storage/run.sh   (RUNS=5 for more runs; SHARPVM=path to skip the publish)
set -euo pipefail
cd "$(dirname "$0")/../.."
RUNS=${RUNS:-3}
if [ -z "${SHARPVM:-}" ]; then
  # The CLI as shipped: published ReadyToRun (PublishReadyToRun in its csproj), so start-up is not JIT time.
  dotnet publish -c Release src/SharpVM.Cli -o artifacts/bench-storage/sharpvm --nologo -v quiet >/dev/null
  SHARPVM=artifacts/bench-storage/sharpvm/sharpvm
fi
S=$SHARPVM
W=$(mktemp -d /tmp/sharpvm-bench.XXXXXX)
trap 'rm -rf "$W"' EXIT
# t CMD...: prints "wall cpu" seconds (cpu = user + sys of the command).
t() { local TIMEFORMAT='%R %U %S' out; out=$( { time "$@" >/dev/null 2>&1; } 2>&1 ); echo "$out" | awk '{printf "%s %.3f", $1, $2 + $3}'; }
median() { sort -n | awk '{a[NR]=$1} END {print (NR % 2) ? a[(NR+1)/2] : sprintf("%.3f", (a[NR/2] + a[NR/2+1]) / 2)}'; }
ratio() { echo "scale=2; $1 / $2" | bc | sed 's/^\./0./'; }
# measure NAME SETUP QEMU_CMD SHARPVM_CMD: runs SETUP before each command, alternating the two tools RUNS times.
measure() {
  local name=$1 setup=$2 qcmd=$3 scmd=$4 qw=() qc=() sw=() sc=() w c
  for _ in $(seq "$RUNS"); do
    eval "$setup"; read -r w c <<<"$(eval t "$qcmd")"; qw+=("$w"); qc+=("$c")
    eval "$setup"; read -r w c <<<"$(eval t "$scmd")"; sw+=("$w"); sc+=("$c")
  done
  local mqw mqc msw msc
  mqw=$(printf '%s\n' "${qw[@]}" | median); mqc=$(printf '%s\n' "${qc[@]}" | median)
  msw=$(printf '%s\n' "${sw[@]}" | median); msc=$(printf '%s\n' "${sc[@]}" | median)
  printf '| %s | %s | %s | %s | %s | %s | %s |\n' "$name" "$mqw" "$msw" "$(ratio "$msw" "$mqw")" "$mqc" "$msc" "$(ratio "$msc" "$mqc")"
}

echo "| case | qemu-img wall s | sharpvm wall s | wall ratio | qemu-img cpu s | sharpvm cpu s | cpu ratio |"
echo "|---|---|---|---|---|---|---|"
# Start-up alone: the fixed cost every case below includes.
qemu-img create -q -f qcow2 "$W/e.qcow2" 1G
measure "info (start-up)" ":" "qemu-img info $W/e.qcow2" "$S img info $W/e.qcow2"
qemu-img create -q -f qcow2 "$W/r.qcow2" 1G
qemu-io -c "write -P 1 0 512M" "$W/r.qcow2" >/dev/null
for args in "-c 200000 -d 64 -s 4k" "-c 20000 -d 16 -s 64k" "-c 2000 -d 4 -s 1M"; do
  measure "bench read $args" ":" "qemu-img bench $args -f qcow2 $W/r.qcow2" "$S img bench $args -f qcow2 $W/r.qcow2"
done
for args in "-c 100000 -d 64 -s 4k" "-c 4000 -d 4 -s 1M"; do
  measure "bench write (fresh image) $args" "qemu-img create -q -f qcow2 $W/w.qcow2 1G" \
    "qemu-img bench -w $args -f qcow2 $W/w.qcow2" "$S img bench -w $args -f qcow2 $W/w.qcow2"
  # The image of the last fresh run, now allocated: rewrites need no metadata.
  measure "bench write (allocated) $args" ":" "qemu-img bench -w $args -f qcow2 $W/w.qcow2" "$S img bench -w $args -f qcow2 $W/w.qcow2"
done
head -c 512M /dev/urandom > "$W/src.raw"; truncate -s 1G "$W/src.raw"
for o in "" "-c" "-c -o compression_type=zstd"; do
  measure "convert raw->qcow2 $o (512M data + 512M hole)" "rm -f $W/out.qcow2" \
    "qemu-img convert -f raw -O qcow2 $o $W/src.raw $W/out.qcow2" "$S img convert -f raw -O qcow2 $o $W/src.raw $W/out.qcow2"
done
# The last output above is zstd-compressed.
mv "$W/out.qcow2" "$W/zstd.qcow2"
measure "convert zstd qcow2->raw" "rm -f $W/out.raw" \
  "qemu-img convert -f qcow2 -O raw $W/zstd.qcow2 $W/out.raw" "$S img convert -f qcow2 -O raw $W/zstd.qcow2 $W/out.raw"
