"""V1: chart_studio's py.Stream writes docs/protocol.md §2.9's four lines and a heartbeat, then closes.

The client sends two different Host lines (py.Stream.HTTP_PORT is the server's port, K1), the head alone
and the first chunk 0.5 s later (K12), and `\\r\\n0\\r\\n\\r\\n` at close (K2). close() returns only
after the server's FIN, which must follow the last byte within 100 ms (R3). The server must apply the
four lines: an append, a replacing array, an append with a layout patch, and a marker colour with
replacing arrays.
"""

import time

import harness
from harness import check

TOKEN = "v1seed0001"


def run():
    harness.configure()
    import chart_studio.plotly as py

    s = py.Stream(TOKEN)
    s.open()
    s.write(dict(x="2026-01-01 10:00:00.000000", y=0.5))
    s.write(dict(x=[1, 2, 3], y=[4, 5, 6]))
    s.heartbeat()
    s.write(dict(x=1, y=2), layout=dict(title="t"))
    s.write(dict(marker=dict(color="red"), x=[7], y=[8]))
    started = time.monotonic()
    s.close()
    close_secs = time.monotonic() - started
    check(close_secs < 0.1, "close() took %.3f s: the server's FIN came late (R3 asks for 100 ms)" % close_secs)

    state = harness.inspect(TOKEN)
    check(state is not None, "no stream %s on the server" % TOKEN)
    check(state["last_seq"] == 4, "last_seq is %r, not 4" % state["last_seq"])
    expected = {"marker.color": ["red"], "x": [7], "y": [8]}
    check(state["window"] == expected, "window %r, not %r" % (state["window"], expected))
    check(state["rejected_lines"] == 0, "%r lines rejected" % state["rejected_lines"])
    check(not state["writer_connected"], "the writer is still connected after close()")
    return "4 lines applied, close() returned in %.0f ms" % (close_secs * 1000)


if __name__ == "__main__":
    harness.main(run)
