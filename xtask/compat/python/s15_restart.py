"""S15: chart_studio across restarts of a durable server (issue 11; docs/reliability.md §6).

`cargo xtask compat` starts `plotstream serve --data-dir DIR` and runs this script three times, each a
phase, with the server stopped and started again between them on the same address and data directory:

    plot         py.plot a figure whose trace streams token T1 (maxpoints 80), as the tutorial does;
                 py.Stream(T1) writes 10 points and closes: its final 200 counts them; py.Stream(T3)
                 writes 5 points that the server applies, and never closes (no final 200)
    (SIGTERM right after, restart)
    after-stop   the URL py.plot returned still serves the same figure: the same page, chart_studio's
                 lookup finds the same fid, the figure's feed has the same layout and traces; T1's
                 window holds the 10 points in the same epoch (a graceful stop keeps it), T3's its 5
                 (a graceful stop keeps what it applied, acknowledged or not); py.Stream(T1) goes on
                 (seq 11-15); T3 gets 5 more, unclosed; a second figure, streaming T2, is plotted and
                 T2 gets 10 points
    (SIGKILL right after this phase's last final 200, restart)
    after-crash  both figures are there (their 201 came back, so they were durable), with every point
                 whose final 200 came back, in order, once; T3 holds a prefix of what it was sent,
                 at least the 5 it had before the graceful stop; T1 and T2 go on where they were; a
                 re-run of the first py.plot finds its file and keeps its URL

The phases share the case's home, where `s15-state.json` carries what the earlier ones saw. The server
runs with `--sync-interval 1s`, and the SIGKILL follows the last final 200 by a fraction of that, so a
200 sent before its lines were committed loses points checked here. It is never in memory: with
`--in-memory` the second phase finds a 404 where the figure was.
"""

import io
import json
import os
import re
import sys
import time

from chart_studio.plotly.chunked_requests import chunked_request

import harness
import rest_spy
from harness import SERVER, check

T1 = "s15restart"
T2 = "s15crash01"
T3 = "s15open001"
FILENAME = {T1: "s15-restart", T2: "s15-crash"}
STATE = os.path.join(os.environ["HOME"], "s15-state.json")


class _BytesSocket(io.BytesIO):
    """chart_studio 1.1.0's close() reads the server's answer up to the FIN and parses it with
    `HTTPResponse(_FakeSocket(bytes))`, but `_FakeSocket` is a `StringIO`: on Python 3 that raises, and
    close() returns '' whatever the answer was. This twin, made of bytes, lets close() return it."""

    def makefile(self, *args, **kwargs):
        return self


chunked_request._FakeSocket = _BytesSocket


def figure(go, token):
    stream = go.Stream(token=token, maxpoints=80)
    trace = go.Scatter(x=[], y=[], mode="lines+markers", stream=stream)
    return go.Figure(data=go.Data([trace]), layout=go.Layout(title="S15 " + token))


def plot(token):
    """py.plot of a new figure streaming `token`: `(url, fid)`; checks the 404s and 201s of a first run."""
    import chart_studio.plotly as py
    import plotly.graph_objs as go

    rest_spy.take()
    url = py.plot(figure(go, token), filename=FILENAME[token], auto_open=False)
    calls, _ = rest_spy.take()
    match = re.fullmatch(re.escape(SERVER) + r"/~demo/(\d+)/", url)
    check(match, "py.plot returned %r, not %s/~demo/N/" % (url, SERVER))
    check(
        [status for _, _, status in calls] == [404, 201, 404, 201],
        "py.plot of a new file made %s, not two lookups (404) and two creations (201)" % calls,
    )
    return url, "demo:" + match.group(1)


def stream(token, xs):
    """py.Stream(token) writes one point per x and closes; checks the final 200 and its count, which
    py.Stream.close() reads and drops (it is `self._stream.close()`, whose answer this keeps)."""
    import chart_studio.plotly as py

    s = py.Stream(token)
    s.open()
    for x in xs:
        s.write(dict(x=x, y=y_of(x)))
    response = s._stream.close()
    check(response, "close() read no response for %s" % token)
    body = response.read().decode("utf-8", "replace")
    check(response.status == 200, "the final response for %s is %d %s" % (token, response.status, body))
    points = json.loads(body).get("points")
    check(points == len(xs), "the final 200 for %s counts %r points, not %d: %s" % (token, points, len(xs), body))


# The streams that this process leaves open: its exit ends them with a FIN and no final 200.
UNCLOSED = []


def write_unclosed(token, xs, seq):
    """py.Stream(token) writes one point per x and is never closed; returns once the server has applied
    them (its last_seq is `seq`)."""
    import chart_studio.plotly as py

    s = py.Stream(token)
    s.open()
    for x in xs:
        s.write(dict(x=x, y=y_of(x)))
    UNCLOSED.append(s)
    deadline = time.monotonic() + 5
    while True:
        state = harness.inspect(token)
        if state is not None and state["last_seq"] == seq:
            return
        check(time.monotonic() < deadline, "%s's last_seq is %r, not %d, 5 s after the writes" % (
            token, state and state["last_seq"], seq))
        time.sleep(0.02)


def unclosed_holds(xs, at_least):
    """T3's window is the first k points written to it (`xs`), in order, once, with k >= `at_least`: k."""
    state = harness.inspect(T3)
    check(state is not None, "no stream %s on the server" % T3)
    window = state["window"].get("x", [])
    check(
        window == xs[:len(window)] and len(window) >= at_least and state["last_seq"] == len(window),
        lambda: "%s holds x=%r (last_seq %r), not the first k >= %d of the points written, %r" % (
            T3, window, state["last_seq"], at_least, xs),
    )
    return len(window)


def y_of(x):
    return x * 0.5


def window_holds(token, xs):
    """Inspection of `token`: every point written (`xs`), in order, once; its maxpoints still 80."""
    state = harness.inspect(token)
    check(state is not None, "no stream %s on the server" % token)
    window = state["window"]
    check(
        window.get("x") == xs and [float(y) for y in window.get("y", [])] == [y_of(x) for x in xs],
        lambda: "%s's window is x=%r y=%r, not the %d points written: x=%r" % (
            token, window.get("x"), window.get("y"), len(xs), xs),
    )
    check(state["last_seq"] == len(xs), "%s's last_seq is %r, not %d" % (token, state["last_seq"], len(xs)))
    check(state["maxpoints"] == 80, "%s's maxpoints is %r, not 80" % (token, state["maxpoints"]))
    check(not state["writer_connected"], "%s still has a writer" % token)
    return state


def figure_seen(url, fid):
    """What a reader of `url` sees: the page and the figure of its feed, without the streams' state."""
    status, page = harness.http_get(url)
    check(status == 200, "GET %s answered %d: %s" % (url, status, page[:200]))
    check('data-events="/api/plots/%s/events"' % fid in page, "the page %s does not follow %s" % (url, fid))
    snapshot = harness.plot_snapshot(fid)
    check(snapshot.get("fid") == fid, "the feed of %s is the figure %r" % (fid, snapshot.get("fid")))
    return {"page": page, "layout": snapshot["layout"], "traces": [t["trace"] for t in snapshot["traces"]]}, snapshot


def same_figure(state, token):
    """The URL py.plot returned for `token` serves the figure it served before the restart, and
    chart_studio's lookup of its filename finds the same fid."""
    from chart_studio.api import v2

    url, fid = state["urls"][token], state["fids"][token]
    seen, snapshot = figure_seen(url, fid)
    before = state["figures"][token]
    for part in ("page", "layout", "traces"):
        check(seen[part] == before[part], lambda: "%s's %s changed across the restart:\n  before %r\n  after  %r" % (
            url, part, before[part], seen[part]))
    try:
        found = v2.files.lookup(FILENAME[token]).json()
    except Exception as err:  # PlotlyRequestError for a 404: the file is gone
        raise harness.CheckFailed("chart_studio's lookup of %s failed: %s" % (FILENAME[token], err))
    check(found.get("fid") == fid, "the lookup of %s finds %r, not %s" % (FILENAME[token], found, fid))
    # The trace is still bound to its stream: the page's feed carries the stream's window.
    feed = snapshot["traces"][0]["stream"]
    check(feed is not None, "the feed of %s has no stream for its trace: %r" % (fid, snapshot["traces"]))
    check(
        feed["window"].get("x") == state["written"][token] and feed["maxpoints"] == 80,
        lambda: "the feed of %s holds x=%r (maxpoints %r), not %s's %r" % (
            fid, feed["window"].get("x"), feed["maxpoints"], token, state["written"][token]),
    )


def load():
    with open(STATE) as f:
        return json.load(f)


def save(state):
    with open(STATE, "w") as f:
        json.dump(state, f)


def phase_plot():
    url, fid = plot(T1)
    written = list(range(1, 11))
    stream(T1, written)
    inspected = window_holds(T1, written)
    seen, _ = figure_seen(url, fid)
    save({
        "urls": {T1: url},
        "fids": {T1: fid},
        "figures": {T1: seen},
        "written": {T1: written, T3: list(range(1, 6))},
        "epochs": {T1: inspected["epoch"]},
    })
    # The last thing before the SIGTERM: points applied, not acknowledged.
    write_unclosed(T3, range(1, 6), 5)
    return "py.plot %s; 10 points acknowledged, 5 unclosed" % url


def phase_after_stop():
    state = load()
    same_figure(state, T1)
    inspected = window_holds(T1, state["written"][T1])
    check(
        inspected["epoch"] == state["epochs"][T1],
        "%s's epoch went from %s to %s across a graceful stop" % (T1, state["epochs"][T1], inspected["epoch"]),
    )
    more = list(range(11, 16))
    stream(T1, more)
    state["written"][T1] += more
    state["epochs"][T1] = window_holds(T1, state["written"][T1])["epoch"]
    unclosed_holds(state["written"][T3], 5)
    state["written"][T3] += list(range(6, 11))
    save(state)
    write_unclosed(T3, range(6, 11), 10)

    # A second figure, plotted and streamed just before the crash: the server is SIGKILLed as soon as
    # this phase exits, right after T2's final 200.
    url, fid = plot(T2)
    check(fid != state["fids"][T1], "the new figure got the first one's fid %s" % fid)
    state["urls"][T2], state["fids"][T2] = url, fid
    state["figures"][T2], _ = figure_seen(url, fid)
    state["written"][T2] = list(range(1, 11))
    stream(T2, state["written"][T2])
    state["epochs"][T2] = window_holds(T2, state["written"][T2])["epoch"]
    save(state)
    return "same page, figure and epoch; 10 + 5 unclosed points kept; T1 went on to 15; a second figure " \
        "streamed 10"


def phase_after_crash():
    state = load()
    acknowledged = {token: len(state["written"][token]) for token in (T1, T2)}
    new_epochs = 0
    for token in (T1, T2):
        same_figure(state, token)
        # A crash may give a stream a new epoch (its viewers then reset); seq goes on either way.
        new_epochs += window_holds(token, state["written"][token])["epoch"] != state["epochs"][token]
        more = list(range(acknowledged[token] + 1, acknowledged[token] + 6))
        stream(token, more)
        state["written"][token] += more
        window_holds(token, state["written"][token])
    kept = unclosed_holds(state["written"][T3], 5)

    # The notebook run again: py.plot finds the file and replaces it at the same URL.
    import chart_studio.plotly as py
    import plotly.graph_objs as go

    rest_spy.take()
    again = py.plot(figure(go, T1), filename=FILENAME[T1], auto_open=False)
    calls, _ = rest_spy.take()
    check(again == state["urls"][T1], "the re-run returned %r, not %r" % (again, state["urls"][T1]))
    check(
        calls[-1] == ("PUT", "/v2/plots/" + state["fids"][T1], 200),
        "the re-run made %s, not a PUT of %s" % (calls, state["fids"][T1]),
    )
    return "both figures and all %d + %d acknowledged points there (%d of 2 streams in a new epoch), %d of 10 " \
        "unclosed; both streams went on; a py.plot re-run keeps the URL" % (
            acknowledged[T1], acknowledged[T2], new_epochs, kept)


PHASES = {"plot": phase_plot, "after-stop": phase_after_stop, "after-crash": phase_after_crash}


def run():
    harness.configure()
    return PHASES[sys.argv[1]]()


if __name__ == "__main__":
    harness.main(run)
