"""What the fault cases F1-F4 share: chart_studio 1.1.0 driven through `plotstream serve --fault ...`.

Each case numbers its writes (`x = y = n`, from 1), times them, and records what a write raised instead
of letting it end the script, as a user who catches the error and goes on would. It then compares the
stream's window (`GET /api/streams/{token}`), the server's fault counters
(`plotstream_faults_injected_total{kind=...}` in `GET /metrics`) and the client's view (which writes
raised, which ones took a reconnect's 0.5 s) with docs/protocol.md §5.1.2-§5.1.3:

- before each write, chart_studio probes the socket with a non-blocking `recv(1)`; a byte or EOF means
  "disconnected", so it reads until EOF and discards the answer, then sends the chunk on the same socket
  anyway;
- once the server has closed (its answer, its FIN at once, then `--linger` of reading and discarding),
  that send still succeeds locally: the write returns normally and is lost, and the server's kernel
  answers it with a reset;
- the next write's send then fails (EPIPE: the reset came after the FIN), so the client reconnects,
  sleeps 0.5 s (§5.1.5) and sends it on the new connection, where it is delivered;
- a reset that comes before any FIN (`--fault reset`) makes the next probe raise `ConnectionResetError`
  in user code; nothing else ever raises.

So a client that writes less often than the server lingers loses exactly one write per server-initiated
end: the first write after it. The cases space their writes by more than the linger they give the
server, so that no write lands inside it.
"""

import collections
import time
import urllib.parse

import harness
from harness import check

# chart_studio sleeps 0.5 s after every (re)connect (§5.1.5); a write that does not reconnect takes a
# few milliseconds on loopback.
RECONNECT_SECS = 0.4

Write = collections.namedtuple("Write", "n at secs error")


def metrics(server=None):
    """`GET /metrics` as {(name, labels): value}, `labels` being the text between the braces, or ''."""
    status, body = harness.http_get((server or harness.SERVER) + "/metrics")
    check(status == 200, "GET /metrics answered %d" % status)
    values = {}
    for line in body.splitlines():
        if not line or line.startswith("#"):
            continue
        series, _, value = line.rpartition(" ")
        name, _, labels = series.partition("{")
        values[(name, labels.rstrip("}"))] = float(value)
    return values


def faults_injected(kind, server=None):
    """How many faults of `kind` the server has injected so far."""
    return metrics(server).get(("plotstream_faults_injected_total", 'kind="%s"' % kind), 0.0)


def connections_total(server=None):
    """Connections the server has accepted, this request's own included."""
    return metrics(server)[("plotstream_connections_total", "")]


def inspect(token, server=None):
    """`GET /api/streams/{token}` of `server` (the case's own by default); None when it has no stream."""
    return harness.inspect(token, server or harness.SERVER)


def delivered(token, server=None):
    """The numbers of the writes the stream holds, checking that `y` mirrors `x` and `last_seq` counts them."""
    state = inspect(token, server)
    check(state is not None, "the server has no stream %s" % token)
    xs = state["window"].get("x", [])
    check(state["window"].get("y", []) == xs, lambda: "window y differs from x: %r" % state["window"])
    check(state["last_seq"] == len(xs), lambda: "last_seq %d, but %d points in the window" % (state["last_seq"], len(xs)))
    return xs


class Writer:
    """A chart_studio `py.Stream` on `token` whose n-th write is `dict(x=n, y=n)`, timed, with whatever it
    raised recorded. `port` (default: the case's server) is `py.Stream.HTTP_PORT`."""

    def __init__(self, token, port=None):
        import chart_studio.plotly as py

        py.Stream.HTTP_PORT = port or harness.PORT
        self.token = token
        self.stream = py.Stream(token)
        self.writes = []
        self.opened_at = None

    def open(self):
        self.stream.open()
        self.opened_at = time.monotonic()

    def write(self):
        n = len(self.writes) + 1
        started = time.monotonic()
        error = None
        try:
            self.stream.write(dict(x=n, y=n))
        except Exception as err:  # what the client raises is the observation, not a failure
            error = err
        self.writes.append(Write(n, started, time.monotonic() - started, error))
        return n

    def close(self):
        """`close()`, which must return (it waits for the server's FIN, §5.1.4); its duration."""
        started = time.monotonic()
        self.stream.close()
        return time.monotonic() - started

    def numbers(self):
        return [w.n for w in self.writes]

    def reconnected(self):
        """The writes that took a reconnect's 0.5 s sleep."""
        return [w.n for w in self.writes if w.error is None and w.secs >= RECONNECT_SECS]

    def raised(self):
        """`[(n, exception)]` of the writes that raised in user code."""
        return [(w.n, w.error) for w in self.writes if w.error is not None]

    def timeline(self):
        """The writes as the client lived them, for failure messages."""
        parts = []
        for w in self.writes:
            if w.error is not None:
                parts.append("w%d raised %r" % (w.n, w.error))
            else:
                parts.append("w%d %.3fs%s" % (w.n, w.secs, " (reconnect)" if w.secs >= RECONNECT_SECS else ""))
        return ", ".join(parts)

    def check_nothing_raised(self):
        raised = self.raised()
        check(not raised, lambda: "chart_studio raised in user code: %r; writes: %s" % (raised, self.timeline()))


def model_after_lines(writes, after):
    """docs/protocol.md §5.1.3 for a server that ends each request after `after` accepted lines, the writes
    spaced by more than its linger: `(delivered, lost, reconnected)` write numbers."""
    delivered_, lost, reconnected = [], [], []
    lines, state = 0, "open"
    for n in range(1, writes + 1):
        if state == "closed":
            # The probe reads the answer and EOF; the send goes out and the server's kernel resets it.
            lost.append(n)
            state = "reset"
            continue
        if state == "reset":
            # The send fails with EPIPE: reconnect (0.5 s) and send on the new connection.
            reconnected.append(n)
            lines, state = 0, "open"
        delivered_.append(n)
        lines += 1
        if lines == after:
            state = "closed"
    return delivered_, lost, reconnected


def lost_before_reconnects(writes, reconnected, per_end):
    """The writes a client loses when each of its reconnects at write r followed a server-initiated end
    that cost the `per_end` writes r-per_end .. r-1 (1 after a healthy disconnect or a flap: the write
    after the end; 2 after a refused line: the refused write and the one after)."""
    lost = set()
    for r in reconnected:
        lost.update(range(r - per_end, r))
    return [n for n in range(1, writes + 1) if n in lost]


def sleep_until(deadline):
    left = deadline - time.monotonic()
    if left > 0:
        time.sleep(left)


def server_port(origin):
    return urllib.parse.urlsplit(origin).port
