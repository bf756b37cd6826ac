"""U2: keys mode: py.iplot and tls.embed (docs/protocol.md §7.7), as V23 but with the user's credentials.

py.iplot (which calls py.plot with the Basic credentials) returns an IFrame of
`{plotly_domain}/~demo/N.embed`; tls.embed of the web_url builds the same source; a browser fetching it
over HTTP without credentials gets 200 and the figure's HTML, since the figure is world-readable.
"""

import re

import harness
from harness import SERVER, check


def run():
    harness.configure()
    import chart_studio.plotly as py
    import chart_studio.tools as tls
    import plotly.graph_objs as go

    stream = go.Stream(token=harness.STREAM_IDS[0], maxpoints=80)
    fig = go.Figure(data=[go.Scatter(x=[], y=[], mode="lines+markers", stream=stream)])
    frame = py.iplot(fig, filename="iplot-streaming")
    match = re.fullmatch(re.escape(SERVER) + r"/~demo/(\d{12})\.embed", getattr(frame, "src", ""))
    check(match, "py.iplot returned %r (src %r)" % (frame, getattr(frame, "src", None)))
    web_url = "%s/~demo/%s/" % (SERVER, match.group(1))
    again = tls.embed(web_url)
    check(again.src == frame.src, "tls.embed(%r) shows %r" % (web_url, again.src))

    status, body = harness.http_get(frame.src)
    check(
        status == 200 and body.lstrip().lower().startswith("<!doctype html"),
        "GET %s answered %d: %s" % (frame.src, status, body[:200]),
    )
    fid = "demo:" + match.group(1)
    check('data-events="/api/plots/%s/events"' % fid in body, "the embed page does not follow the figure %s" % fid)
    check(harness.STREAM_IDS[0] not in body, "the embed page shows the write token")
    return "py.iplot shows %s (200, HTML, no token)" % frame.src


if __name__ == "__main__":
    harness.main(run)
