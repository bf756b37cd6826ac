"""V10: chart_studio streams to a token the server does not know, in `--tokens registered` mode.

The server answers 404 right after the head, before reading any body byte. chart_studio never sees a
status (docs/protocol.md §5.1.1): its writes go into the closed request, which the server discards while it
lingers (2 s, §4.4); once the server has closed, a write fails with EPIPE and the client reconnects
(0.5 s), gets 404 again, and so on. Nothing is ever delivered, and nothing is raised in user code.
"""

import time

import harness
from harness import check

TOKEN = "v10unknown"
WRITES = 6
# Longer than the linger in all: the client must reconnect at least once.
INTERVAL = 0.6


def run():
    # The raw head alone: the answer must come without any body byte sent.
    response, end, secs = harness.raw_exchange([harness.chart_studio_head(TOKEN)], timeout=5.0)
    check(response.startswith(b"HTTP/1.1 404 Not Found\r\n"), "the head got %r" % response[:200])
    check(response.endswith(b"\r\n\r\nstreamtoken not registered or valid"), "the 404 body is %r" % response[-80:])
    check(end == "fin", "the 404 ended with a %s, not a FIN" % end)
    check(secs < 1.0, "the 404 came %.2f s after the head" % secs)

    harness.configure()
    import chart_studio.plotly as py

    connections_before = harness.metric("plotstream_connections_total")
    started = time.monotonic()
    s = py.Stream(TOKEN)
    s.open()
    for n in range(WRITES):
        s.write(dict(x=n, y=n))
        time.sleep(INTERVAL)
    s.close()
    secs = time.monotonic() - started
    # The stream's connections: open() and every reconnect (the first metric request is counted too).
    connections = harness.metric("plotstream_connections_total") - connections_before - 1
    check(connections >= 2, "only %d stream connection for %d writes: the client never reconnected" % (connections, WRITES))
    check(harness.inspect(TOKEN) is None, "the unknown token has a stream")
    return "404 after the head; %d writes, %d connections in %.1f s, nothing raised" % (WRITES, connections, secs)


if __name__ == "__main__":
    harness.main(run)
