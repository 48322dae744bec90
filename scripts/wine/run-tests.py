#!/usr/bin/env python3
"""Run Windows test binaries under Wine and print pass and skip counts.

Usage: run-tests.py WINE QUIC_REASON NAME=TEST.exe...

QUIC_REASON is empty when the probe in scripts/windows.sh could open a QUIC
socket under this Wine. When it is not, a test that fails only because it
could not open one (the Winsock codes quinn-udp meets under Wine 8:
WSAENOPROTOOPT 10042 for IP_RECVECN, WSAEOPNOTSUPP 10045 for IPV6_V6ONLY)
tested nothing here: it is counted as skipped and named with the reason.
Every other failure fails the run, its output printed.
"""

import os
import re
import subprocess
import sys

WINE_SOCKET_ERROR = re.compile(r"code: 100(42|45)\b")


def sections(output):
    """The captured output of each failed test, by name."""
    found = {}
    for match in re.finditer(
        r"^---- (\S+) stdout ----\n(.*?)(?=^---- \S+ stdout ----|^failures:)",
        output,
        re.S | re.M,
    ):
        found[match.group(1)] = match.group(2)
    return found


def main():
    wine, quic_reason, tests = sys.argv[1], sys.argv[2], sys.argv[3:]
    total_passed = total_skipped = 0
    ok = True
    for exe in tests:
        name, exe = exe.split("=", 1)
        try:
            run = subprocess.run(
                [wine, exe, "--test-threads", "2"],
                cwd=os.path.dirname(exe),
                capture_output=True,
                text=True,
                errors="replace",
                timeout=900,
            )
        except subprocess.TimeoutExpired:
            print(f"    {name}: timed out under Wine", flush=True)
            ok = False
            continue
        output = run.stdout + run.stderr
        summary = re.search(r"^test result: \w+\. (\d+) passed; (\d+) failed", output, re.M)
        if not summary:
            print(output)
            print(f"    {name}: no test summary (exit {run.returncode})", flush=True)
            ok = False
            continue
        passed = int(summary.group(1))
        failed_output = sections(output)
        failed = re.findall(r"^test (\S+) \.\.\. FAILED$", output, re.M)
        skipped, real = [], []
        for test in failed:
            text = failed_output.get(test, "")
            if quic_reason and WINE_SOCKET_ERROR.search(text):
                skipped.append(test)
            else:
                real.append(test)
        print(f"    {name:<28} passed {passed}, skipped {len(skipped)}", flush=True)
        for test in skipped:
            print(f"        skipped {test}: cannot open a QUIC socket under Wine")
        for test in real:
            print(f"---- {test} ----\n{failed_output.get(test, '(no output)')}")
            print(f"    FAILED {test}")
            ok = False
        total_passed += passed
        total_skipped += len(skipped)
    print(f"    Wine: {total_passed} passed, {total_skipped} skipped", flush=True)
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
