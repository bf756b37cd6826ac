"""F2: `--fault flap:every=1 --linger 100ms`: a healthy `200` ends every writer at each whole second since the
server started (the legacy maintenance flap), and chart_studio pays exactly one write per flap that finds
it connected (docs/protocol.md §5.1.3).

A raw writer first waits for a flap, which gives the server's phase F. chart_studio then opens at once (its
head is admitted just after F, so the flap at F+1 ends it) and writes once a second, 0.3 s after each
boundary: after the 100 ms linger has ended, and far enough before the next flap that a reconnect's 0.5 s
sleep still sends its chunk before that flap. Write 1 (F+0.6) is delivered; each flap at F+1 and F+3 costs
the next write (F+1.3, F+3.3: it returns normally and is lost), and the write after it (F+2.3, F+4.3)
reconnects, sends at +0.8 and is delivered, so the flaps at F+2 and F+4 find no connection, and close()
returns before F+5. So 1, 3, 5 arrive, 2 and 4 are lost, and nothing is raised.
"""

import socket
import time

import harness
import simulator
from harness import HOST, PORT, check

TOKEN = "f2flapping"
EVERY = 1.0
# Where in the period the writes go: after the flap's linger, early enough for a reconnect's 0.5 s.
PHASE = 0.3
# The write times after the phase F, in seconds.
SCHEDULE = [0.6] + [k + PHASE for k in range(1, 5)]
WANT_DELIVERED = [1, 3, 5]
WANT_RECONNECTED = [3, 5]


def flap_phase():
    """Waits for a flap to end a raw writer; the instant its `200` arrived (monotonic seconds)."""
    sock = socket.create_connection((HOST, PORT), timeout=EVERY + 3)
    try:
        sock.sendall(harness.chart_studio_head("f2phase001"))
        first = sock.recv(65536)
        at = time.monotonic()
        answer = first
        while True:
            data = sock.recv(65536)
            if not data:
                break
            answer += data
    finally:
        sock.close()
    check(answer.startswith(b"HTTP/1.1 200 OK\r\n"), "the flap answered %r" % answer[:100])
    check(answer.endswith(b'{"status":200,"message":"healthy endpoint disconnect","points":0}'), "the flap's body is %r" % answer[-80:])
    return at


def run():
    harness.configure()
    flaps_before = simulator.faults_injected("flap")
    phase = flap_phase()
    w = simulator.Writer(TOKEN)
    w.open()
    for at in SCHEDULE:
        simulator.sleep_until(phase + at)
        w.write()
    closing = w.close()
    closed_at = time.monotonic() - phase
    flaps = simulator.faults_injected("flap") - flaps_before - 1

    w.check_nothing_raised()
    got = simulator.delivered(TOKEN)
    lost = [n for n in w.numbers() if n not in got]
    next_flap = int(SCHEDULE[-1] / EVERY + 1) * EVERY
    check(closed_at < next_flap, "close() returned %.2f s after the phase, not before the flap at %.0f s" % (closed_at, next_flap))
    check(got == WANT_DELIVERED, lambda: "the window holds %r, not %r (lost %r); writes: %s" % (got, WANT_DELIVERED, lost, w.timeline()))
    check(w.reconnected() == WANT_RECONNECTED, lambda: "writes %r reconnected, not %r: %s" % (w.reconnected(), WANT_RECONNECTED, w.timeline()))
    check(flaps == len(lost), "%d flaps ended the client's requests, but %d writes were lost" % (flaps, len(lost)))
    check(closing < 1.0, "close() took %.2f s" % closing)
    return "%d writes over %.0f s, %d flaps met the client: lost %r (each the write right after a flap), reconnected at %r, delivered %r; nothing raised" % (
        len(SCHEDULE),
        closed_at,
        flaps,
        lost,
        w.reconnected(),
        got,
    )


if __name__ == "__main__":
    harness.main(run)
