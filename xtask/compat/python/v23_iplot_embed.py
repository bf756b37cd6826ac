"""V23: py.iplot and the embed helpers (docs/protocol.md §7.7), with IPython installed as in a notebook.

py.iplot returns an IFrame of `{plotly_domain}/~demo/N.embed`, 100% wide and 525 px high; tls.embed of
a URL and tls.get_embed build the same source; the viewer serves it.
"""

import re

import harness
from harness import SERVER, check


def run():
    harness.configure()
    import chart_studio.plotly as py
    import chart_studio.tools as tls
    import plotly.graph_objs as go

    stream_1 = go.Stream(token="v23iplot01", maxpoints=80)
    fig = go.Figure(data=[go.Scatter(x=[], y=[], mode="lines+markers", stream=stream_1)])
    frame = py.iplot(fig, filename="iplot-streaming")
    match = re.fullmatch(re.escape(SERVER) + r"/~demo/(\d+)\.embed", getattr(frame, "src", ""))
    check(match, "py.iplot returned %r (src %r)" % (frame, getattr(frame, "src", None)))
    check(frame.width == "100%" and str(frame.height) in ("525", "525px"), "the IFrame is %r x %r" % (frame.width, frame.height))
    web_url = "%s/~demo/%s/" % (SERVER, match.group(1))

    again = tls.embed(web_url)
    check(again.src == frame.src, "tls.embed(%r) shows %r" % (web_url, again.src))
    html = tls.get_embed(web_url)
    check('src="%s"' % frame.src in html, "tls.get_embed(%r) is %r" % (web_url, html))
    demo = tls.get_embed("streaming-demos", "12")
    check('src="%s/~streaming-demos/12.embed"' % SERVER in demo, "tls.get_embed('streaming-demos', '12') is %r" % demo)

    status, body = harness.http_get(frame.src)
    check(status == 200 and body.lstrip().lower().startswith("<!doctype html"), "GET %s answered %d: %s" % (frame.src, status, body[:200]))
    check('data-events="/api/plots/demo:%s/events"' % match.group(1) in body, "the embed page does not follow the figure")
    return "py.iplot shows %s (200, HTML)" % frame.src


if __name__ == "__main__":
    harness.main(run)
