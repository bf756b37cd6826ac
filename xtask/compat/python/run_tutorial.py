"""Runs tutorial.py cell by cell in an IPython shell, as a notebook would, then checks what it did.

The server must listen on port 80 of 127.0.0.1 (the tutorial leaves `py.Stream.HTTP_PORT` alone) and on
the port of COMPAT_SERVER. Two spies record, without changing either, what the tutorial wrote to its
stream and what `py.plot` (called by `py.iplot`) returned. The case passes when every cell runs, the
plot's URL is on this server and its pages are served, and the inspection API shows every point that
was written, in order, with the window of `maxpoints` 80.
"""

import os
import re

import harness
from harness import SERVER, check


def run():
    import chart_studio.plotly as py_package
    import chart_studio.plotly.plotly as py_module
    from IPython.core.interactiveshell import InteractiveShell

    written = []
    original_write = py_module.Stream.write

    def recording_write(self, trace, *args, **kwargs):
        written.append(dict(trace))
        return original_write(self, trace, *args, **kwargs)

    py_module.Stream.write = recording_write

    plot_urls = []
    original_plot = py_module.plot

    def recording_plot(*args, **kwargs):
        url = original_plot(*args, **kwargs)
        plot_urls.append(url)
        return url

    # `py.iplot` calls the module's `plot`; a notebook calling `py.plot` gets the package's.
    py_module.plot = recording_plot
    py_package.plot = recording_plot

    path = os.path.join(os.path.dirname(os.path.abspath(__file__)), "tutorial.py")
    with open(path, encoding="utf-8") as f:
        source = f.read()
    cells = re.split(r"(?m)^# %%.*\n", source)[1:]
    check(len(cells) >= 8, "tutorial.py has only %d cells" % len(cells))

    shell = InteractiveShell.instance()
    results = []
    for number, cell in enumerate(cells, start=1):
        print("----- cell %d -----" % number, flush=True)
        result = shell.run_cell(cell, store_history=True)
        error = result.error_before_exec or result.error_in_exec
        check(result.success, "cell %d raised %r" % (number, error))
        results.append(result.result)

    stream_id = shell.user_ns["stream_id"]
    check(py_module.Stream.HTTP_PORT == 80, "the tutorial changed py.Stream.HTTP_PORT")

    # py.plot (inside py.iplot) returned this server's URL of the figure.
    check(len(plot_urls) == 1, "py.plot was called %d times" % len(plot_urls))
    url = plot_urls[0]
    match = re.fullmatch(re.escape(SERVER) + r"/~demo/(\d+)/", url)
    check(match, "py.plot returned %r, not %s/~demo/N/" % (url, SERVER))
    fid = "demo:" + match.group(1)

    # py.iplot's cell shows the figure's embed page.
    frames = [r for r in results if r is not None and hasattr(r, "src")]
    check(len(frames) == 2, "expected two IFrames (py.iplot, tls.embed), got %r" % results)
    iplot_frame, embed_frame = frames
    check(
        iplot_frame.src == url[:-1] + ".embed",
        "py.iplot shows %r, not %r" % (iplot_frame.src, url[:-1] + ".embed"),
    )

    # The figure's pages are served, and their feed carries the streamed points.
    for page in (url, iplot_frame.src):
        status, body = harness.http_get(page)
        check(status == 200, "GET %s answered %d" % (page, status))
        check(
            'data-events="/api/plots/%s/events"' % fid in body,
            "the page %s does not follow the figure %s: %s" % (page, fid, body[:300]),
        )

    # Every point written, in order; the window keeps the newest 80.
    xs = [point["x"] for point in written]
    ys = [float(point["y"]) for point in written]
    check(len(written) == 120, "the tutorial wrote %d points, not 120" % len(written))
    state = harness.inspect(stream_id)
    check(state is not None, "no stream %s on the server" % stream_id)
    check(state["maxpoints"] == 80, "maxpoints is %r, not 80" % state["maxpoints"])
    check(state["last_seq"] == 120, "last_seq is %r: not every one of the 120 writes arrived" % state["last_seq"])
    check(state["count"] == 80, "count is %r, not 80" % state["count"])
    check(state["window"]["x"] == xs[-80:], lambda: "window x %r != the last 80 written %r" % (state["window"]["x"], xs[-80:]))
    check(state["window"]["y"] == ys[-80:], lambda: "window y %r != the last 80 written %r" % (state["window"]["y"], ys[-80:]))
    check(state["rejected_lines"] == 0, "%r lines rejected" % state["rejected_lines"])
    check(not state["writer_connected"], "the writer is still connected after s.close()")

    snapshot = harness.plot_snapshot(fid)
    trace = snapshot["traces"][0]
    check(trace["stream"] is not None, "the figure's feed has no stream for trace 0: %r" % snapshot)
    feed_window = trace["stream"].get("window", trace["stream"])
    check(
        feed_window.get("x") == xs[-80:] and feed_window.get("y") == ys[-80:],
        lambda: "the figure page's feed does not carry the last 80 points: %r" % trace["stream"],
    )

    # The notebook's last cell embeds Plotly's demo plot. With IPython, chart_studio 1.1.0 passes the URL
    # it built as the owner too (tools.embed -> _get_embed_url(url, file_id)), so the IFrame's src is
    # {plotly_domain}/~{plotly_domain}/~streaming-demos/12/12.embed; only tls.get_embed builds
    # {plotly_domain}/~streaming-demos/12.embed (V23 checks that one). The cell must run, nothing more.
    demo_src = "%s/~%s/~streaming-demos/12/12.embed" % (SERVER, SERVER)
    check(embed_frame.src == demo_src, "tls.embed built %r, not %r" % (embed_frame.src, demo_src))

    return "py.iplot -> py.plot %s; %d points written, last_seq %d, window %d of maxpoints %d" % (
        url,
        len(written),
        state["last_seq"],
        state["count"],
        state["maxpoints"],
    )


if __name__ == "__main__":
    harness.main(run)
