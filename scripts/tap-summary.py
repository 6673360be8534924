#!/usr/bin/env python3
"""Counts TAP test cases in a meson testlog.json: prints "N passed, N failed, N skipped".

Every `ok` line is a pass, `ok ... # SKIP` a skip, `not ok` a failure; a test
program that failed without reporting a failing case (crash, timeout, bad TAP)
counts as one more failure. Exit status 1 when anything failed."""
import json
import re
import sys

passed = failed = skipped = 0
with open(sys.argv[1]) as f:
    for line in f:
        t = json.loads(line)
        out = t.get("stdout") or ""
        cases_failed = 0
        for tap in out.splitlines():
            if re.match(r"not ok\b", tap):
                failed += 1
                cases_failed += 1
            elif re.match(r"ok\b", tap):
                if re.search(r"#\s*SKIP", tap, re.I):
                    skipped += 1
                else:
                    passed += 1
        if t.get("result") not in ("OK", "SKIP", "EXPECTEDFAIL") and cases_failed == 0:
            failed += 1
            print("%s: %s without a failing TAP case" % (t.get("name"), t.get("result")),
                  file=sys.stderr)
print("%d passed, %d failed, %d skipped" % (passed, failed, skipped))
sys.exit(1 if failed else 0)
