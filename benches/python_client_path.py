#!/usr/bin/env python3
"""The Python client's write path per point, the Python baseline of docs/performance.md.

chart_studio's Stream.write builds `json.dumps(stream_object, cls=PlotlyJSONEncoder) + "\\n"`
and chunked_request.Stream.write frames it as
`"{msglen}\\r\\n{msg}\\r\\n".format(msglen=format(len(msg), "x"), msg=msg).encode("utf-8")`.
This measures that path (plain json.dumps, which PlotlyJSONEncoder only slows down) over the
same kind of values as the Rust encode_point bench: a millisecond clock and full-precision
doubles in [-1000, 1000). Prints one JSON line: {"name": "python_client_path", "ns_per_point": ...}.
Standard library only.
"""

import json
import random
import timeit

N_POINTS = 1024
T0_MS = 1_700_000_000_000


def points(n):
    rng = random.Random(0x9E3779B97F4A7C15)
    x = T0_MS
    out = []
    for _ in range(n):
        x += 1 + rng.randrange(64)
        out.append((x, rng.random() * 2000.0 - 1000.0))
    return out


def write_path(values):
    """One chunk per point, exactly as chart_studio builds it before `send()`."""
    for x, y in values:
        msg = json.dumps({"x": x, "y": y}) + "\n"
        "{msglen}\r\n{msg}\r\n".format(msglen=format(len(msg), "x"), msg=msg).encode("utf-8")


def main():
    values = points(N_POINTS)
    timer = timeit.Timer(lambda: write_path(values))
    number, _ = timer.autorange()
    best = min(timer.repeat(repeat=5, number=number))
    ns_per_point = best / (number * N_POINTS) * 1e9
    print(json.dumps({"name": "python_client_path", "ns_per_point": round(ns_per_point, 1)}))


if __name__ == "__main__":
    main()
