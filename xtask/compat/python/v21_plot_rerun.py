"""V21: py.plot of the tutorial's figure, a first run and a re-run (docs/protocol.md §7.4).

The first run looks the grid and the plot up (404), then creates both (201); the re-run finds them,
deletes the grid (204), creates a new one, and replaces the plot (PUT, 200), keeping its URL. A filename
with folders adds `POST /v2/folders` before the grid and before the plot. The figure binds its stream
token with maxpoints 80.
"""

import re

import harness
import rest_spy
from harness import SERVER, check

TOKEN = "v21plot001"


def figure(go):
    stream_1 = go.Stream(token=TOKEN, maxpoints=80)
    trace1 = go.Scatter(x=[], y=[], mode="lines+markers", stream=stream_1)
    return go.Figure(data=go.Data([trace1]), layout=go.Layout(title="Time Series"))


def run():
    harness.configure()
    import chart_studio.plotly as py
    import plotly.graph_objs as go

    fig = figure(go)
    first = py.plot(fig, filename="python-streaming", auto_open=False)
    first_calls, _ = rest_spy.take()
    match = re.fullmatch(re.escape(SERVER) + r"/~demo/(\d+)/", first)
    check(match, "py.plot returned %r, not %s/~demo/N/" % (first, SERVER))
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
    check(again_calls[1][1].startswith("/v2/grids/demo:"), "the re-run deleted %s" % again_calls[1][1])
    check(again_calls[4][1] == "/v2/plots/demo:" + match.group(1), "the re-run replaced %s" % again_calls[4][1])

    deep = py.plot(fig, filename="compat/deep/python-streaming", auto_open=False)
    deep_calls, _ = rest_spy.take()
    paths = [(method, path, status) for method, path, status in deep_calls]
    check(re.fullmatch(re.escape(SERVER) + r"/~demo/\d+/", deep) and deep != first, "the deep plot is at %r" % deep)
    check(
        [p for p in paths if p[1] == "/v2/folders"] == [("POST", "/v2/folders", 201), ("POST", "/v2/folders", 200)],
        "folders: %s" % paths,
    )

    state = harness.inspect(TOKEN)
    check(state is not None and state["maxpoints"] == 80, "the token is not bound with maxpoints 80: %r" % state)
    status, _ = harness.http_get(first)
    check(status == 200, "GET %s answered %d" % (first, status))
    return "first run 404s then 201s, re-run DELETE + PUT at the same URL %s; folders created once" % first


if __name__ == "__main__":
    harness.main(run)
