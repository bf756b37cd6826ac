"""F4: `--fault reset:prob=1,token=f4always01 --fault reset:prob=0.5,token=f4half0001 --seed 1 --linger 100ms`:
a TCP reset instead of applying a line is the one way chart_studio raises in user code (docs/protocol.md
§5.1.3, §9.1); F1-F3 check that no other fault makes it raise.

The server resets (SO_LINGER 0) on receiving the line, before any FIN, so the write that carried it has
already returned normally, and is lost. The next write's probe `recv(1)` fails with ECONNRESET (errno
104), which chart_studio does not expect on Linux: it raises `ConnectionResetError` from `write()`,
before sending, so that write is lost too. The write after that finds the socket shut, fails to send
(EPIPE), reconnects (0.5 s) and sends its line on a new request.

- `f4always01`, every line reset: writes 1 and 3 return and are lost, 2 and 4 raise, 3 reconnects; the
  window stays empty and the server counts 2 resets.
- `f4half0001`, half the lines reset (seeded): every reset costs the reset write and the next one, which
  raises; the write after a raise reconnects and is delivered unless it is reset in turn. Seed 1 resets
  writes 3, 7 and 9 (9 is the reconnected one), and not the last write, whose reset no later write
  would reveal.
"""

import errno
import time

import harness
import simulator
from harness import check

ALWAYS = "f4always01"
HALF = "f4half0001"
HALF_WRITES = 10
SPACING = 0.3


def writes(token, count):
    w = simulator.Writer(token)
    w.open()
    for _ in range(count):
        time.sleep(SPACING)
        w.write()
    w.close()
    for n, err in w.raised():
        check(isinstance(err, ConnectionResetError) and err.errno == errno.ECONNRESET, "write %d raised %r, not ConnectionResetError(104)" % (n, err))
    return w


def run():
    harness.configure()

    w = writes(ALWAYS, 4)
    raised = [n for n, _ in w.raised()]
    check(raised == [2, 4], lambda: "writes %r raised, not [2, 4]: %s" % (raised, w.timeline()))
    check(w.reconnected() == [3], lambda: "writes %r reconnected, not [3]: %s" % (w.reconnected(), w.timeline()))
    check(simulator.delivered(ALWAYS) == [], "a line of %s was applied" % ALWAYS)
    resets = simulator.faults_injected("reset")
    check(resets == 2, "the server counted %d resets, not 2" % resets)

    w = writes(HALF, HALF_WRITES)
    raised = [n for n, _ in w.raised()]
    got = simulator.delivered(HALF)
    half_resets = simulator.faults_injected("reset") - resets
    # Each raise at write r: r-1 carried the reset line; r itself was never sent.
    want_lost = sorted({m for r in raised for m in (r - 1, r)})
    want = [n for n in w.numbers() if n not in want_lost]
    check(raised, "the seed reset no line of %d" % HALF_WRITES)
    check(got == want, lambda: "the window holds %r, not %r: %s" % (got, want, w.timeline()))
    check(half_resets == len(raised), "the server counted %d resets, but %d writes raised: %s" % (half_resets, len(raised), w.timeline()))
    after_raise = [r + 1 for r in raised if r < HALF_WRITES]
    check(w.reconnected() == after_raise, lambda: "writes %r reconnected, not %r: %s" % (w.reconnected(), after_raise, w.timeline()))
    return "every line reset: writes 2, 4 raised ConnectionResetError(104), 1-4 lost, 3 reconnected; half reset (seed 1): %d resets, writes %r raised, lost %r, reconnected at %r, delivered %r" % (
        half_resets,
        raised,
        want_lost,
        w.reconnected(),
        got,
    )


if __name__ == "__main__":
    harness.main(run)
