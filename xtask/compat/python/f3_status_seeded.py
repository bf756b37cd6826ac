"""F3: `--fault status:code=503,prob=0.3 --seed 7 --linger 100ms`, twice: two fresh servers with the same seed
refuse the same lines of the same chart_studio run, so the client loses the same writes (the seed makes a
client's failure reproducible), and it never raises (docs/protocol.md §5.1.3).

`python f3_status_seeded.py ORIGIN_B`: the first run goes to the case's server, the second to ORIGIN_B;
neither gets any other request before its stream ends, so both see the same connections in the same order.

A refused line is not applied: the server answers `503` and FIN, lingers 100 ms and closes. The next write
(0.3 s later) returns normally and is lost; the one after reconnects (0.5 s) and is sent on a new request,
whose lines the seed may refuse again. So each refusal costs two writes, the refused one and the next,
and the write after them reconnects: every reconnect at write r means r-2 was refused and r-1 was lost.
"""

import sys
import time

import harness
import simulator
from harness import check

TOKEN = "f3status01"
WRITES = 12
SPACING = 0.3


def one_run(origin):
    w = simulator.Writer(TOKEN, port=simulator.server_port(origin))
    w.open()
    for _ in range(WRITES):
        time.sleep(SPACING)
        w.write()
    w.close()
    w.check_nothing_raised()
    got = simulator.delivered(TOKEN, origin)
    refusals = simulator.faults_injected("status", origin)
    reconnected = w.reconnected()
    want_lost = simulator.lost_before_reconnects(WRITES, reconnected, 2)
    want = [n for n in w.numbers() if n not in want_lost]
    check(got == want, lambda: "%s: the window holds %r, not %r (reconnects at %r); writes: %s" % (origin, got, want, reconnected, w.timeline()))
    check(refusals == len(reconnected), "%s: %d lines refused, but the client reconnected %d times: %s" % (origin, refusals, len(reconnected), w.timeline()))
    return got, reconnected, refusals


def run():
    other = sys.argv[1]
    harness.configure()
    first = one_run(harness.SERVER)
    second = one_run(other)
    check(first[2] > 0, "the seed refused no line in %d writes" % WRITES)
    check(first == second, "the two runs differ: delivered %r, reconnects %r, %d refusals; then %r, %r, %d" % (first + second))
    got, reconnected, refusals = first
    lost = [n for n in range(1, WRITES + 1) if n not in got]
    return "both runs: %d writes, %d refused by 503, lost %r (each refusal: the refused write and the next), reconnected at %r, delivered %r; nothing raised" % (
        WRITES,
        refusals,
        lost,
        reconnected,
        got,
    )


if __name__ == "__main__":
    harness.main(run)
