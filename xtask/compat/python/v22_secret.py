"""V22: py.plot with sharing='secret' (docs/protocol.md §7.4, §7.6 rule 5, §7.7).

The plot answer carries a share_key; py.plot returns `.../~demo/N?share_key=K`, which the viewer serves,
as it serves `.../~demo/N.embed?share_key=K`.
"""

import re

import harness
import rest_spy
from harness import SERVER, check


def run():
    harness.configure()
    import chart_studio.plotly as py
    import plotly.graph_objs as go

    stream_1 = go.Stream(token="v22secret1", maxpoints=80)
    fig = go.Figure(data=[go.Scatter(x=[], y=[], mode="lines+markers", stream=stream_1)])
    url = py.plot(fig, filename="secret-streaming", sharing="secret", auto_open=False)
    calls, bodies = rest_spy.take()
    match = re.fullmatch(re.escape(SERVER) + r"/~demo/(\d+)\?share_key=([A-Za-z0-9]+)", url)
    check(match, "py.plot returned %r, not %s/~demo/N?share_key=K" % (url, SERVER))
    plot_answer = bodies[[path for _, path, _ in calls].index("/v2/plots")]
    check(plot_answer["file"].get("share_key") == match.group(2), "the plot answer is %r" % plot_answer)

    fid = "demo:" + match.group(1)
    embed = "%s/~demo/%s.embed?share_key=%s" % (SERVER, match.group(1), match.group(2))
    for page in (url, embed):
        status, body = harness.http_get(page)
        check(status == 200, "GET %s answered %d" % (page, status))
        # The feed of a secret plot carries the same key as the page.
        events = 'data-events="/api/plots/%s/events?share_key=%s"' % (fid, match.group(2))
        check(events in body, "GET %s is not the figure's page: %s" % (page, body[:300]))
        status, _ = harness.http_get(page.replace("share_key=", "share_key=x"))
        check(status == 404, "GET %s with a wrong share key answered %d" % (page, status))
    return "%s and its .embed are served, and only with the key" % url


if __name__ == "__main__":
    harness.main(run)
