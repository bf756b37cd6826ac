"""U3: keys mode: py.plot with sharing='secret' (docs/protocol.md §7.4, §7.6 rule 5, §7.7).

The returned `.../~demo/N?share_key=K` is served (200), as is its `.embed?share_key=K`; the same page
without the key is 404, with a slash or without, embedded or not, and so is the figure's feed
`/api/plots/demo:N/events` without the key, which with the key gives its snapshot.
"""

import re

import harness
from harness import SERVER, check


def run():
    harness.configure()
    import chart_studio.plotly as py
    import plotly.graph_objs as go

    stream = go.Stream(token=harness.STREAM_IDS[1], maxpoints=80)
    fig = go.Figure(data=[go.Scatter(x=[], y=[], mode="lines+markers", stream=stream)])
    url = py.plot(fig, filename="secret-streaming", sharing="secret", auto_open=False)
    match = re.fullmatch(re.escape(SERVER) + r"/~demo/(\d{12})\?share_key=([A-Za-z0-9]+)", url)
    check(match, "py.plot returned %r, not %s/~demo/N?share_key=K" % (url, SERVER))
    n, key = match.groups()
    fid = "demo:" + n

    served = (url, "%s/~demo/%s.embed?share_key=%s" % (SERVER, n, key))
    for page in served:
        status, body = harness.http_get(page)
        check(status == 200, "GET %s answered %d" % (page, status))
        feed = 'data-events="/api/plots/%s/events?share_key=%s"' % (fid, key)
        check(feed in body, "GET %s is not the figure's page with its keyed feed: %s" % (page, body[:600]))
    hidden = ("%s/~demo/%s" % (SERVER, n), "%s/~demo/%s/" % (SERVER, n), "%s/~demo/%s.embed" % (SERVER, n))
    for page in hidden:
        status, _ = harness.http_get(page)
        check(status == 404, "GET %s without the share key answered %d, not 404" % (page, status))
    status, _ = harness.http_get("%s/~demo/%s?share_key=wrong%s" % (SERVER, n, key))
    check(status == 404, "a wrong share key answered %d, not 404" % status)

    status, _ = harness.http_get("%s/api/plots/%s/events" % (SERVER, fid))
    check(status == 404, "the secret figure's feed without the key answered %d, not 404" % status)
    snapshot = harness.plot_snapshot(fid, query="?share_key=" + key)
    check(len(snapshot.get("traces", [])) == 1, "the keyed feed's snapshot is %r" % snapshot)
    return "%s and its .embed are served (200), both 404 without the key, as is the feed" % url


if __name__ == "__main__":
    harness.main(run)
