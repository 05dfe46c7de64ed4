"""pytest plugin: appends one line per test, "<seconds of setup + call + teardown>\t<outcome>\t
<node id>\t<unix time>", to the file $I16D_TIMES (the same figures as --durations=0, written as
each test ends, so a run stopped by a timeout still leaves them)."""

import os
import time

OUT = os.environ.get("I16D_TIMES", "durations.tsv")
_t = {}


def pytest_runtest_logreport(report):
    d = _t.setdefault(report.nodeid, [0.0, "passed"])
    d[0] += report.duration
    if report.outcome != "passed":
        d[1] = report.outcome
    if report.when == "teardown":
        with open(OUT, "a") as f:
            f.write(f"{d[0]:.2f}\t{d[1]}\t{report.nodeid}\t{time.time():.0f}\n")
