"""F1: `--fault disconnect:after=5 --linger 100ms`: the server ends every request after its 5th line with a
healthy `200`, and chart_studio, writing every 0.3 s, pays exactly one write per end (docs/protocol.md §5.1.3).

The 5th line of a connection gets the `200` and the FIN at once; the server reads and discards for 100 ms,
then closes. The next write (0.3 s later) probes, reads the answer and EOF, and sends anyway: it returns
normally and is lost. The write after that fails to send (EPIPE), reconnects (0.5 s) and is delivered as
the first line of a new request. With 14 writes: 1-5 and 7-11 and 13-14 arrive, 6 and 12 are lost, 7 and
13 reconnect, the server counts 2 disconnects, and nothing is raised.
"""

import time

import harness
import simulator
from harness import check

TOKEN = "f1disconn1"
AFTER = 5
WRITES = 14
# Longer than the server's 100 ms linger, so no write lands inside it.
SPACING = 0.3


def run():
    harness.configure()
    before = simulator.connections_total()
    w = simulator.Writer(TOKEN)
    w.open()
    for _ in range(WRITES):
        time.sleep(SPACING)
        w.write()
    closing = w.close()
    connections = simulator.connections_total() - before - 1

    want_delivered, want_lost, want_reconnected = simulator.model_after_lines(WRITES, AFTER)
    w.check_nothing_raised()
    got = simulator.delivered(TOKEN)
    lost = [n for n in w.numbers() if n not in got]
    check(got == want_delivered, lambda: "the window holds %r, not %r (lost %r, want %r); writes: %s" % (got, want_delivered, lost, want_lost, w.timeline()))
    check(w.reconnected() == want_reconnected, lambda: "writes %r reconnected, not %r: %s" % (w.reconnected(), want_reconnected, w.timeline()))
    ends = simulator.faults_injected("disconnect")
    check(ends == len(want_lost), "the server counted %d disconnects, not %d" % (ends, len(want_lost)))
    check(connections == len(want_reconnected) + 1, "%d stream connections, not %d" % (connections, len(want_reconnected) + 1))
    check(closing < 1.0, "close() took %.2f s" % closing)
    return "%d writes, %d disconnects: lost %r (each the write right after an end), reconnected at %r, the other %d in order; nothing raised" % (
        WRITES,
        ends,
        lost,
        w.reconnected(),
        len(got),
    )


if __name__ == "__main__":
    harness.main(run)
