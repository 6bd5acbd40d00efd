#!/usr/bin/env python3
"""KVM-path benchmark: SharpVM vs a minimal C VMM doing the same work, in one run.

Measures, for each side, over several alternating runs: PIO exit round trip (ns per exit, N exits
of a real-mode `out` loop), VM setup (open /dev/kvm -> vCPU ready), process start -> first PIO exit,
and peak RSS. Prints a markdown table of medians and SharpVM/C ratios.
Usage: python3 bench/kvm/run.py [--runs 7] [--exits 200000]
"""
import argparse, os, statistics, subprocess, sys, tempfile, time

here = os.path.dirname(os.path.abspath(__file__))
root = os.path.dirname(os.path.dirname(here))

def build():
    out = tempfile.mkdtemp(prefix="sharpvm-bench-")
    subprocess.run(["gcc", "-O2", "-o", f"{out}/pio_exit", f"{here}/pio_exit.c"], check=True)
    subprocess.run(["dotnet", "publish", f"{root}/bench/SharpVM.Bench", "-c", "Release", "-o", f"{out}/sharp", "--nologo", "-v", "quiet"], check=True)
    return [f"{out}/pio_exit"], [f"{out}/sharp/SharpVM.Bench"]

def run_once(cmd, exits):
    start = time.perf_counter()
    p = subprocess.Popen(cmd + [str(exits)], stdout=subprocess.PIPE, text=True)
    first = p.stdout.readline()
    first_exit_ms = (time.perf_counter() - start) * 1000
    assert first.strip() == "first-exit", first
    rest = p.stdout.read()
    _, status, usage = os.wait4(p.pid, 0)
    if status != 0:
        sys.exit(f"{cmd[0]} failed with status {status}")
    fields = dict(kv.split("=") for kv in rest.split())
    return {"exit_ns": float(fields["exit_ns"]), "setup_us": float(fields["setup_us"]), "setup_cold_us": float(fields["setup_cold_us"]),
            "first_exit_ms": first_exit_ms, "rss_mib": usage.ru_maxrss / 1024,
            "setup_cold_jit": int(fields.get("setup_cold_jit", 0))}

def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--runs", type=int, default=7)
    ap.add_argument("--exits", type=int, default=200000)
    args = ap.parse_args()
    c_cmd, sharp_cmd = build()
    results = {"C": [], "SharpVM": []}
    for _ in range(args.runs):  # alternate, so both see the same machine noise
        results["C"].append(run_once(c_cmd, args.exits))
        results["SharpVM"].append(run_once(sharp_cmd, args.exits))
    rows = [("PIO exit round trip", "exit_ns", "ns"),
            ("VM setup, first VM in the process (open /dev/kvm -> vCPU ready, CPUID set)", "setup_cold_us", "µs"),
            ("VM setup, second VM in the process", "setup_us", "µs"),
            ("process start -> first PIO exit", "first_exit_ms", "ms"), ("peak RSS", "rss_mib", "MiB")]
    print(f"| metric ({args.runs} runs, {args.exits} exits each; medians) | C | SharpVM | SharpVM / C |")
    print("| --- | ---: | ---: | ---: |")
    for name, key, unit in rows:
        c = statistics.median(r[key] for r in results["C"])
        s = statistics.median(r[key] for r in results["SharpVM"])
        print(f"| {name} | {c:.1f} {unit} | {s:.1f} {unit} | {s / c:.2f}x |")
    jit = [r["setup_cold_jit"] for r in results["SharpVM"]]
    print(f"\nSharpVM methods JIT-compiled while the first VM was built (0 = all ReadyToRun): {min(jit)}-{max(jit)}")

if __name__ == "__main__":
    main()
