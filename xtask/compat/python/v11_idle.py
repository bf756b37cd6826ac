"""V11: the idle timeout (L28), here `--idle-timeout 2s`, on the wire and as chart_studio lives it.

On the wire: a head and one line, then silence, gets `408 timeout on active data` 2 s (± 0.5) after the
line, then a FIN. `heartbeat()` keeps a quiet stream open past the timeout. chart_studio (docs/protocol.md
§5.1.3), writing less often than the server lingers after
its answer (2 s, §4.4): the write after the 408 returns normally but is lost, and the one after that
reconnects and arrives, on a new connection; nothing is raised.
"""

import time

import harness
from harness import check

IDLE = 2.0
# How long the server reads and discards after its answer before it closes (§4.4).
LINGER = 2.0


def run():
    head = harness.chart_studio_head("v11wire001")
    response, end, secs = harness.raw_exchange([head, harness.chunk('{"x": 1, "y": 1}\n')], timeout=IDLE + 5)
    check(response.startswith(b"HTTP/1.1 408 Request Timeout\r\n"), "the idle stream got %r" % response[:200])
    check(response.endswith(b"\r\n\r\ntimeout on active data"), "the 408 body is %r" % response[-60:])
    check(end == "fin", "the 408 ended with a %s, not a FIN" % end)
    check(abs(secs - IDLE) <= 0.5, "the 408 came %.2f s after the last line, not %.1f s" % (secs, IDLE))
    wire = harness.inspect("v11wire001")
    check(wire["last_seq"] == 1, "the line before the 408 was not kept: %r" % wire)

    harness.configure()
    import chart_studio.plotly as py

    # Heartbeats count as activity: 3.6 s of heartbeats only, and the stream is still the same.
    token = "v11heartbt"
    s = py.Stream(token)
    s.open()
    s.write(dict(x=1, y=1))
    connections_before = harness.metric("plotstream_connections_total")
    for _ in range(3):
        time.sleep(IDLE * 0.6)
        s.heartbeat()
    s.write(dict(x=2, y=2))
    s.close()
    connections = harness.metric("plotstream_connections_total") - connections_before - 1
    check(harness.inspect(token)["window"]["x"] == [1, 2], "a write after the heartbeats was lost")
    check(connections == 0, "the client reconnected %d times despite the heartbeats" % connections)

    token = "v11client1"
    s = py.Stream(token)
    s.open()
    s.write(dict(x=1, y=1))
    time.sleep(IDLE + LINGER + 1.0)  # the server answers 408, lingers and closes meanwhile
    connections_before = harness.metric("plotstream_connections_total")
    s.write(dict(x=2, y=2))  # lost: sent on the closed connection, the server's kernel resets it
    s.write(dict(x=3, y=3))  # fails with EPIPE inside the client, which reconnects (0.5 s): it arrives
    s.close()
    connections = harness.metric("plotstream_connections_total") - connections_before - 1
    state = harness.inspect(token)
    check(state["window"]["x"] == [1, 3], "window x %r, not [1, 3]" % state["window"]["x"])
    check(state["last_seq"] == 2, "last_seq %r, not 2" % state["last_seq"])
    check(connections == 1, "%d new connections for the two writes after the 408, not 1" % connections)
    return "408 %.2f s after the last line; heartbeats keep a stream open; the write after a 408 lost, the next one arrived on a new connection" % secs


if __name__ == "__main__":
    harness.main(run)
