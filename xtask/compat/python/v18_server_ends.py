"""V18: the server ends a stream while chart_studio writes every 100 ms; the client must never raise.

`python v18_server_ends.py takeover`: a second writer takes the token over, so the server answers the
client's request with 423. `python v18_server_ends.py idle` (server with `--idle-timeout 2s`): the client
pauses past the idle timeout, the server answers 408, then the client writes every 100 ms again.

Either way the server sends its answer and a FIN and never a reset (docs/protocol.md §4.4), so chart_studio
never raises ConnectionResetError (§5.1.3): the writes that land while the server lingers are lost,
and once it has closed the client reconnects by itself and its later writes arrive, in order.
"""

import socket
import sys
import time

import harness
from harness import HOST, PORT, check

INTERVAL = 0.1
WRITES = 50
IDLE = 2.0


def run():
    mode = sys.argv[1]
    check(mode in ("takeover", "idle"), "mode %r is neither takeover nor idle" % mode)
    harness.configure()
    import chart_studio.plotly as py

    token = "v18" + mode[:4] + "001"
    s = py.Stream(token)
    s.open()
    other = None
    if mode == "idle":
        s.write(dict(x=-1, y=-1))
        time.sleep(IDLE + 0.5)  # the server answers 408 meanwhile
    for n in range(WRITES):
        if mode == "takeover" and n == 10:
            # A second writer of the same token: the server ends the client's request with 423.
            other = socket.create_connection((HOST, PORT), timeout=5)
            other.sendall(harness.chart_studio_head(token) + harness.chunk('{"x": -1, "y": -1}\n'))
        if other is not None and n == 13:
            other.sendall(b"0\r\n\r\n")
            answer = other.recv(4096)
            other.close()
            check(answer.startswith(b"HTTP/1.1 200 OK"), "the second writer got %r" % answer[:100])
            other = None
        s.write(dict(x=n, y=n))
        time.sleep(INTERVAL)
    s.close()

    xs = harness.inspect(token)["window"]["x"]
    check(-1 in xs, "the other line is missing: %r" % xs)
    mine = [x for x in xs if x != -1]
    check(mine == sorted(mine), "the client's writes arrived out of order: %r" % xs)
    check(xs[-1] == WRITES - 1, "the last write did not arrive: window %r" % xs)
    if mode == "takeover":
        before = xs[: xs.index(-1)]
        check(before == list(range(len(before))) and len(before) >= 10, "writes before the takeover are missing: %r" % xs)
    lost = WRITES - len(mine)
    # About 2 s of writes go into the lingering request (20 at this pace); the rest must arrive.
    check(0 < lost <= 30, "%d of %d writes lost: %r" % (lost, WRITES, xs))
    return "%s: nothing raised; %d of %d writes lost while the server lingered, the rest arrived in order" % (
        "423 (takeover)" if mode == "takeover" else "408 (idle)",
        lost,
        WRITES,
    )


if __name__ == "__main__":
    harness.main(run)
