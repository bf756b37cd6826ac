"""U1: keys mode (`serve --users FILE`): py.plot of the tutorial's figure, a first run and a re-run, then
py.Stream writes to the user's stream id (docs/protocol.md §7.3, §7.4).

The credentials are the ones `plotstream user add demo --api-key demokey123 --stream-ids 2` printed, so
every v2 call carries the Basic `demo:demokey123` that chart_studio sends, and the figure streams one of
the two stream ids issued to demo. The calls and the URL are V21's; fids are `demo:` and 12 random digits.
Keys mode lists no write token: `GET /api/streams` gives read ids, so the stream is found by its count
and read by its id, and the token itself addresses no read.
"""

import re

import harness
import rest_spy
from harness import SERVER, check

POINTS = [(i, i * i) for i in range(5)]


def run():
    harness.configure()
    import chart_studio.plotly as py
    import plotly.graph_objs as go

    token = harness.STREAM_IDS[0]
    trace = go.Scatter(x=[], y=[], mode="lines+markers", stream=go.Stream(token=token, maxpoints=80))
    fig = go.Figure(data=go.Data([trace]), layout=go.Layout(title="Time Series"))

    first = py.plot(fig, filename="python-streaming", auto_open=False)
    first_calls, _ = rest_spy.take()
    match = re.fullmatch(re.escape(SERVER) + r"/~demo/(\d{12})/", first)
    check(match, "py.plot returned %r, not %s/~demo/<12 digits>/" % (first, SERVER))
    expected = [
        ("GET", "/v2/files/lookup", 404),
        ("POST", "/v2/grids", 201),
        ("GET", "/v2/files/lookup", 404),
        ("POST", "/v2/plots", 201),
    ]
    check(first_calls == expected, "first run: %s, not %s" % (first_calls, expected))

    again = py.plot(fig, filename="python-streaming", auto_open=False)
    again_calls, _ = rest_spy.take()
    check(again == first, "the re-run returned %r, not the first run's %r" % (again, first))
    methods = [(method, status) for method, _, status in again_calls]
    expected = [("GET", 200), ("DELETE", 204), ("POST", 201), ("GET", 200), ("PUT", 200)]
    check(methods == expected, "re-run: %s, not lookup, DELETE, grid POST, lookup, PUT" % again_calls)
    check(again_calls[4][1] == "/v2/plots/demo:" + match.group(1), "the re-run replaced %s" % again_calls[4][1])

    s = py.Stream(token)
    s.open()
    for x, y in POINTS:
        s.write(dict(x=x, y=y))
    s.close()

    listing = harness.streams()
    check(token not in repr(listing), "GET /api/streams shows the write token: %r" % listing)
    written = [entry for entry in listing if entry["last_seq"] == len(POINTS)]
    check(len(listing) == 1 and len(written) == 1, "GET /api/streams: %r, not one stream of %d points" % (listing, len(POINTS)))
    stream_id = written[0]["id"]
    state = harness.inspect(stream_id)
    window = {"x": [x for x, _ in POINTS], "y": [y for _, y in POINTS]}
    check(state["window"] == window, "the stream's window is %r, not %r" % (state["window"], window))
    check(state["maxpoints"] == 80, "the figure bound the stream with maxpoints %r, not 80" % state["maxpoints"])
    check(token not in repr(state), "GET /api/streams/%s shows the write token: %r" % (stream_id, state))
    check(harness.inspect(token) is None, "GET /api/streams/<write token> answers: tokens address no read")

    status, _ = harness.http_get(first)
    check(status == 200, "GET %s answered %d" % (first, status))
    return "py.plot first run and re-run at %s; %d py.Stream points in stream %s (maxpoints 80), no token listed" % (
        first,
        len(POINTS),
        stream_id,
    )


if __name__ == "__main__":
    harness.main(run)
