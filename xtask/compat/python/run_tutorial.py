"""Runs tutorial.py cell by cell in an IPython shell, as a notebook would, then checks what it did.

The server must listen on port 80 of 127.0.0.1 (the tutorial leaves `py.Stream.HTTP_PORT` alone) and on
the port of COMPAT_SERVER. Two spies record, without changing either, what the tutorial wrote to its
stream and what `py.plot` (called by `py.iplot`) returned. The case passes when every cell runs, the
plot's URL is on this server and its pages are served, and the inspection API shows every point that
was written, in order, with the window of `maxpoints` 80.

With `--reader ORIGIN` (the cluster case: COMPAT_SERVER is node A of two `serve --redis` nodes on one
Redis, ORIGIN node B), the same checks are then made on node B, which the tutorial never talked to: the
figure's pages at the URL `py.plot` returned with node B's host and port, the figure's feed, and the
stream's inspection, whose stored state (epoch, seqs, window, digest) must equal node A's.
"""

import os
import re
import sys
import urllib.parse

import harness
from harness import SERVER, check


def run(reader=None):
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
    check_pages((url, iplot_frame.src), fid)

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

    check_feed(fid, xs, ys)

    # The notebook's last cell embeds Plotly's demo plot. With IPython, chart_studio 1.1.0 passes the URL
    # it built as the owner too (tools.embed -> _get_embed_url(url, file_id)), so the IFrame's src is
    # {plotly_domain}/~{plotly_domain}/~streaming-demos/12/12.embed; only tls.get_embed builds
    # {plotly_domain}/~streaming-demos/12.embed (V23 checks that one). The cell must run, nothing more.
    demo_src = "%s/~%s/~streaming-demos/12/12.embed" % (SERVER, SERVER)
    check(embed_frame.src == demo_src, "tls.embed built %r, not %r" % (embed_frame.src, demo_src))

    summary = "py.iplot -> py.plot %s; %d points written, last_seq %d, window %d of maxpoints %d" % (
        url,
        len(written),
        state["last_seq"],
        state["count"],
        state["maxpoints"],
    )
    if reader is None:
        return summary
    return summary + "; " + check_reader(reader, (url, iplot_frame.src), fid, stream_id, state, xs, ys)


def check_pages(pages, fid):
    """Every page answers 200 and follows the figure's feed."""
    for page in pages:
        status, body = harness.http_get(page)
        check(status == 200, "GET %s answered %d: %s" % (page, status, body[:300]))
        check(
            'data-events="/api/plots/%s/events"' % fid in body,
            "the page %s does not follow the figure %s: %s" % (page, fid, body[:300]),
        )


def check_feed(fid, xs, ys, server=SERVER):
    """The snapshot of the figure's feed on `server` carries the last 80 points written."""
    snapshot = harness.plot_snapshot(fid, server=server)
    trace = snapshot["traces"][0]
    check(trace["stream"] is not None, "the figure's feed on %s has no stream for trace 0: %r" % (server, snapshot))
    feed_window = trace["stream"].get("window", trace["stream"])
    check(
        feed_window.get("x") == xs[-80:] and feed_window.get("y") == ys[-80:],
        lambda: "the figure page's feed on %s does not carry the last 80 points: %r" % (server, trace["stream"]),
    )


# What node B must show of the stream exactly as node A does: what is stored, not who is connected.
STORED = ("id", "epoch", "first_seq", "last_seq", "count", "maxpoints", "bytes", "window", "digest")


def check_reader(reader, pages, fid, stream_id, on_a, xs, ys):
    """The figure and the stream, read from node `reader` after the tutorial ended on node A."""
    # The URLs py.plot and py.iplot returned, with node B's host and port.
    origin = urllib.parse.urlsplit(reader)
    moved = [urllib.parse.urlsplit(page)._replace(scheme=origin.scheme, netloc=origin.netloc).geturl() for page in pages]
    check_pages(moved, fid)
    check_feed(fid, xs, ys, server=reader)
    on_b = harness.inspect(stream_id, server=reader)
    check(on_b is not None, "node B (%s) has no stream %s" % (reader, stream_id))
    differ = {key: (on_a.get(key), on_b.get(key)) for key in STORED if on_a.get(key) != on_b.get(key)}
    check(not differ, lambda: "node B's inspection differs from node A's (A, B): %r" % differ)
    check(not on_b["writer_connected"], "node B says a writer is connected after s.close()")
    return "node B %s: %s and its .embed 200 following %s, feed and inspection the same (last_seq %d, digest %s...)" % (
        origin.netloc,
        moved[0],
        fid,
        on_b["last_seq"],
        on_b["digest"][:12],
    )


if __name__ == "__main__":
    args = sys.argv[1:]
    if args and (len(args) != 2 or args[0] != "--reader"):
        sys.exit("usage: run_tutorial.py [--reader ORIGIN], not %r" % args)
    harness.main(lambda: run(reader=args[1] if args else None))
