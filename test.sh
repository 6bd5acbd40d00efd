#!/usr/bin/env bash
# Runs SharpVM's whole test suite. Installs what it needs first (see scripts/install-deps.sh).
set -euo pipefail
cd "$(dirname "$0")"
./scripts/install-deps.sh
# The default Linux guest (Debian's kernel + a busybox initramfs), cached under ~/.cache/sharpvm:
# tests that load or boot the real kernel need it.
./guest/build-default-guest.sh >/dev/null
dotnet build SharpVM.slnx -c Release --nologo -v quiet
results="$(mktemp -d)"
set +e
# One test assembly at a time (-m:1): several test hosts at once on 2 cores starve the vCPU and
# timer threads that the VM tests depend on.
dotnet test SharpVM.slnx -c Release --no-build -m:1 --logger "trx" --results-directory "$results" --logger "console;verbosity=normal"
status=$?
set -e
# One closing line over every test assembly: "N passed, N failed, N skipped", after the name and
# reason of every skipped test (tests that do not apply to this host say so by name).
python3 - "$results" <<'PY'
import sys, glob, xml.etree.ElementTree as ET
ns = {"t": "http://microsoft.com/schemas/VisualStudio/TeamTest/2010"}
passed = failed = skipped = 0
for f in glob.glob(sys.argv[1] + "/*.trx"):
    c = ET.parse(f).getroot().find("t:ResultSummary/t:Counters", ns)
    passed += int(c.get("passed")); failed += int(c.get("failed")) + int(c.get("error")) + int(c.get("timeout"))
    skipped += int(c.get("total")) - int(c.get("executed"))  # the trx logger leaves notExecuted at 0 for skips
    for r in ET.parse(f).getroot().iterfind(".//t:UnitTestResult[@outcome='NotExecuted']", ns):
        reason = " ".join(m.text or "" for m in r.iterfind(".//t:Message", ns)) or "(no reason given)"
        print(f"skipped: {r.get('testName')}: {reason.strip()}")
print(f"{passed} passed, {failed} failed, {skipped} skipped")
PY
exit $status
