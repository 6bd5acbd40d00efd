#!/bin/bash
# sharpvm img bench/convert vs qemu-img on the same images and parameters. Usage: bench/storage/run.sh
# Build first: dotnet build -c Release src/SharpVM.Cli
set -euo pipefail
cd "$(dirname "$0")/../.."
S=${SHARPVM:-src/SharpVM.Cli/bin/Release/net10.0/linux-x64/sharpvm}
W=$(mktemp -d /tmp/sharpvm-bench.XXXXXX)
trap 'rm -rf "$W"' EXIT
# t CMD...: prints "wall cpu" seconds (cpu = user + sys of the command).
t() { local TIMEFORMAT='%R %U %S' out; out=$( { time "$@" >/dev/null 2>&1; } 2>&1 ); echo "$out" | awk '{printf "%s %.3f", $1, $2 + $3}'; }
ratio() { echo "scale=2; $1 / $2" | bc | sed 's/^\./0./'; }
row() {
  local qw qc sw sc; read -r qw qc <<<"$2"; read -r sw sc <<<"$3"
  printf '| %s | %s | %s | %s | %s | %s | %s |\n' "$1" "$qw" "$sw" "$(ratio "$sw" "$qw")" "$qc" "$sc" "$(ratio "$sc" "$qc")"
}

echo "| case | qemu-img wall s | sharpvm wall s | wall ratio | qemu-img cpu s | sharpvm cpu s | cpu ratio |"
echo "|---|---|---|---|---|---|---|"
qemu-img create -q -f qcow2 "$W/r.qcow2" 1G
qemu-io -c "write -P 1 0 512M" "$W/r.qcow2" >/dev/null
for args in "-c 200000 -d 64 -s 4k" "-c 20000 -d 16 -s 64k" "-c 2000 -d 4 -s 1M"; do
  q=$(t qemu-img bench $args -f qcow2 "$W/r.qcow2")
  s=$(t $S img bench $args -f qcow2 "$W/r.qcow2")
  row "bench read $args" "$q" "$s"
done
for args in "-c 100000 -d 64 -s 4k" "-c 4000 -d 4 -s 1M"; do
  qemu-img create -q -f qcow2 "$W/wq.qcow2" 1G; qemu-img create -q -f qcow2 "$W/ws.qcow2" 1G
  q=$(t qemu-img bench -w $args -f qcow2 "$W/wq.qcow2")
  s=$(t $S img bench -w $args -f qcow2 "$W/ws.qcow2")
  row "bench write (fresh image) $args" "$q" "$s"
  q=$(t qemu-img bench -w $args -f qcow2 "$W/wq.qcow2")
  s=$(t $S img bench -w $args -f qcow2 "$W/ws.qcow2")
  row "bench write (allocated) $args" "$q" "$s"
done
head -c 512M /dev/urandom > "$W/src.raw"; truncate -s 1G "$W/src.raw"
for o in "" "-c" "-c -o compression_type=zstd"; do
  rm -f "$W/q.qcow2" "$W/s.qcow2"
  q=$(t qemu-img convert -f raw -O qcow2 $o "$W/src.raw" "$W/q.qcow2")
  s=$(t $S img convert -f raw -O qcow2 $o "$W/src.raw" "$W/s.qcow2")
  row "convert raw->qcow2 $o (512M data + 512M hole)" "$q" "$s"
done
rm -f "$W/q.raw" "$W/s.raw"
q=$(t qemu-img convert -f qcow2 -O raw "$W/q.qcow2" "$W/q.raw")
s=$(t $S img convert -f qcow2 -O raw "$W/q.qcow2" "$W/s.raw")
row "convert zstd qcow2->raw" "$q" "$s"
