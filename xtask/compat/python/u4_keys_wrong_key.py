"""U4: keys mode: chart_studio with a wrong API key (docs/protocol.md §7.3, §7.5, §7.6 rule 2).

The credentials file holds the right user and stream ids but the key `wrongkey123`. py.plot's grid lookup
gets 401, which chart_studio reads as "not found" (any non-2xx, §7.5); the grid's POST gets 401 too, and
chart_studio raises `chart_studio.exceptions.PlotlyRequestError` with the server's message, status 401 and
the error body; py.iplot raises the same. py.sign_in with the wrong key raises PlotlyError("Sign in
failed."). Nothing is created: with the right key the lookups find neither file, and no stream exists.
"""

import base64
import json
import urllib.error
import urllib.request

import harness
import rest_spy
from harness import SERVER, check

WRONG_KEY = "wrongkey123"
MESSAGE = "Invalid username or API key."
BODY = json.dumps({"errors": [{"message": MESSAGE}]}, separators=(",", ":")).encode()


def lookup(path):
    """The status of `GET /v2/files/lookup?path=<path>` with the right credentials."""
    auth = base64.b64encode(("%s:%s" % (harness.USERNAME, harness.API_KEY)).encode()).decode()
    request = urllib.request.Request(
        "%s/v2/files/lookup?path=%s" % (SERVER, path), headers={"authorization": "Basic " + auth}
    )
    try:
        with urllib.request.urlopen(request, timeout=5) as response:
            return response.status
    except urllib.error.HTTPError as err:
        return err.code


def run():
    harness.configure(api_key=WRONG_KEY)
    import chart_studio.plotly as py
    import plotly.graph_objs as go
    from chart_studio.exceptions import PlotlyRequestError
    from plotly.exceptions import PlotlyError

    stream = go.Stream(token=harness.STREAM_IDS[0], maxpoints=80)
    fig = go.Figure(data=[go.Scatter(x=[], y=[], mode="lines+markers", stream=stream)])
    shown = []
    for name, call in (
        ("py.plot", lambda: py.plot(fig, filename="python-streaming", auto_open=False)),
        ("py.iplot", lambda: py.iplot(fig, filename="python-streaming")),
    ):
        try:
            returned = call()
        except PlotlyRequestError as err:
            caught = err
        else:
            raise harness.CheckFailed("a wrong key returned %r instead of raising" % (returned,))
        calls, _ = rest_spy.take()
        expected = [("GET", "/v2/files/lookup", 401), ("POST", "/v2/grids", 401)]
        check(calls == expected, "the calls were %s, not %s" % (calls, expected))
        check(
            (str(caught), caught.message, caught.status_code, caught.content) == (MESSAGE, MESSAGE, 401, BODY),
            "PlotlyRequestError(%r, %r, %r)" % (caught.message, caught.status_code, caught.content),
        )
        shown.append("%s raised %s(%r, %d)" % (name, type(caught).__name__, caught.message, caught.status_code))

    try:
        py.sign_in(harness.USERNAME, WRONG_KEY, plotly_domain=SERVER, plotly_api_domain=SERVER)
    except PlotlyError as err:
        check(str(err) == "Sign in failed.", "py.sign_in raised %r" % err)
        shown.append("py.sign_in raised %s(%r)" % (type(err).__name__, str(err)))
    else:
        raise harness.CheckFailed("py.sign_in with a wrong key did not raise")
    calls, _ = rest_spy.take()
    check(calls == [("GET", "/v2/users/current", 401)], "py.sign_in made %s" % calls)

    for path in ("python-streaming_grid", "python-streaming"):
        check(lookup(path) == 404, "with the right key, the lookup of %s answers %d: it was created" % (path, lookup(path)))
    check(harness.streams() == [], "a stream exists: %r" % harness.streams())
    return "; ".join(shown) + "; nothing created"


if __name__ == "__main__":
    harness.main(run)
