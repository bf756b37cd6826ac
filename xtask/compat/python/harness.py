"""What the Python compat cases share: where the server is, the inspection API, raw sockets and checks.

`cargo xtask compat` (xtask/src/compat/run.rs) runs every case script with the venv's python and:

    COMPAT_SERVER   the server's plaintext origin, e.g. http://127.0.0.1:41234
    PLOTLY_DIR      a fresh directory of the case, where chart_studio keeps its credentials and config
    HOME            its parent, so that nothing touches the real home

and, for the keys-mode cases (`serve --users FILE`), the account `plotstream user add` printed:

    COMPAT_USERNAME, COMPAT_API_KEY   the user and key
    COMPAT_STREAM_IDS                 the stream ids it issued to the user, comma-separated

A case passes when its script exits with 0. Its last line `ok: ...` is shown after the case's name; any
other exit shows the script's output.
"""

import json
import os
import socket
import sys
import time
import traceback
import urllib.error
import urllib.parse
import urllib.request

SERVER = os.environ["COMPAT_SERVER"]
HOST = urllib.parse.urlsplit(SERVER).hostname
PORT = urllib.parse.urlsplit(SERVER).port

USERNAME = os.environ.get("COMPAT_USERNAME", "demo")
API_KEY = os.environ.get("COMPAT_API_KEY", "demokey123")
# Open mode takes any token; keys mode streams only the user's stream ids.
STREAM_IDS = tuple(filter(None, os.environ.get("COMPAT_STREAM_IDS", "").split(","))) or ("abcdef1234", "zyxwvu9876")


class CheckFailed(Exception):
    pass


def check(condition, message):
    """Fails the case with `message` (evaluated lazily when it is a callable)."""
    if not condition:
        raise CheckFailed(message() if callable(message) else message)


def configure(stream_ids=STREAM_IDS, stream_port=PORT, api_key=API_KEY):
    """The configuration lines of docs/clients.md: credentials, the three domains, and the stream port.

    `stream_port=None` leaves `py.Stream.HTTP_PORT` at chart_studio's fixed 80.
    """
    import chart_studio.plotly as py
    import chart_studio.tools as tls

    tls.set_credentials_file(username=USERNAME, api_key=api_key, stream_ids=list(stream_ids))
    tls.set_config_file(plotly_domain=SERVER, plotly_api_domain=SERVER, plotly_streaming_domain=HOST)
    if stream_port is not None:
        py.Stream.HTTP_PORT = stream_port


def http_get(url, timeout=5.0):
    """`(status, body text)` of a GET; HTTP errors are answers, not exceptions."""
    try:
        with urllib.request.urlopen(url, timeout=timeout) as response:
            return response.status, response.read().decode("utf-8", "replace")
    except urllib.error.HTTPError as err:
        return err.code, err.read().decode("utf-8", "replace")


def inspect(token, server=SERVER):
    """`GET /api/streams/{token}` of `server` (by default COMPAT_SERVER) as a dict, or None when the server
    has no such stream. In keys mode streams are read by their read id (see `streams()`), never by their
    write token."""
    status, body = http_get("%s/api/streams/%s" % (server, token))
    if status == 404:
        return None
    check(status == 200, "GET /api/streams/%s answered %d: %s" % (token, status, body[:200]))
    return json.loads(body)


def streams():
    """`GET /api/streams`: every stream, by its read `id` (keys mode lists no write token)."""
    status, body = http_get(SERVER + "/api/streams")
    check(status == 200, "GET /api/streams answered %d: %s" % (status, body[:200]))
    return json.loads(body)


def metric(name):
    """The value of an unlabelled counter or gauge of `GET /metrics`."""
    status, body = http_get(SERVER + "/metrics")
    check(status == 200, "GET /metrics answered %d" % status)
    for line in body.splitlines():
        parts = line.split()
        if len(parts) == 2 and parts[0] == name:
            return float(parts[1])
    raise CheckFailed("no metric %s in GET /metrics" % name)


def plot_snapshot(fid, timeout=5.0, query="", server=SERVER):
    """The `snapshot` event of a figure page's feed (`/api/plots/{fid}/events`, plus `query` such as
    `?share_key=K`) on `server` (by default COMPAT_SERVER), as a dict."""
    host, port = urllib.parse.urlsplit(server).hostname, urllib.parse.urlsplit(server).port
    sock = socket.create_connection((host, port), timeout=timeout)
    try:
        sock.sendall(
            (
                "GET /api/plots/%s/events%s HTTP/1.1\r\nHost: %s:%d\r\nAccept: text/event-stream\r\n\r\n"
                % (fid, query, host, port)
            ).encode()
        )
        data = b""
        deadline = time.monotonic() + timeout
        while b"\n\n" not in data.split(b"\r\n\r\n", 1)[-1] and time.monotonic() < deadline:
            chunk = sock.recv(65536)
            if not chunk:
                break
            data += chunk
    finally:
        sock.close()
    head, _, events = data.partition(b"\r\n\r\n")
    check(head.startswith(b"HTTP/1.1 200"), "the figure feed answered %r" % head[:100])
    event = events.split(b"\n\n", 1)[0].decode()
    fields = {}
    for line in event.splitlines():
        key, _, value = line.partition(":")
        fields.setdefault(key, []).append(value[1:] if value.startswith(" ") else value)
    check(fields.get("event") == ["snapshot"], "the feed's first event is not a snapshot: %r" % event[:200])
    return json.loads("\n".join(fields["data"]))


def raw_exchange(parts, timeout=5.0):
    """Sends `parts` (bytes, or a float of seconds to sleep) on a fresh connection to the server, then
    reads until the server closes. Returns `(response bytes, how it ended, seconds from the last byte
    sent to that end)`; the end is "fin", "reset" or "timeout"."""
    sock = socket.create_connection((HOST, PORT), timeout=timeout)
    try:
        for part in parts:
            if isinstance(part, (int, float)):
                time.sleep(part)
            else:
                sock.sendall(part)
        sent = time.monotonic()
        data = b""
        while True:
            try:
                chunk = sock.recv(65536)
            except ConnectionResetError:
                return data, "reset", time.monotonic() - sent
            except socket.timeout:
                return data, "timeout", time.monotonic() - sent
            if not chunk:
                return data, "fin", time.monotonic() - sent
            data += chunk
    finally:
        sock.close()


def chart_studio_head(token, port=PORT):
    """The head chart_studio 1.1.0 sends at `open()` (docs/protocol.md §2.9), for this server."""
    host_port = HOST if port == 80 else "%s:%d" % (HOST, port)
    return (
        "POST / HTTP/1.1\r\nHost: %s\r\nAccept-Encoding: identity\r\nTransfer-Encoding: chunked\r\n"
        "Host: %s\r\nplotly-streamtoken: %s\r\n\r\n" % (host_port, HOST, token)
    ).encode()


def chunk(line):
    """One chart_studio chunk: lowercase hex size, the line and its CRLF."""
    data = line.encode() if isinstance(line, str) else line
    return b"%x\r\n%s\r\n" % (len(data), data)


def main(case):
    """Runs `case()`; prints `ok: <what it returned>` and exits 0, or prints why and exits 1."""
    try:
        summary = case()
    except CheckFailed as err:
        print("FAILED: %s" % err, flush=True)
        sys.exit(1)
    except BaseException:
        traceback.print_exc()
        sys.stdout.flush()
        sys.exit(1)
    print("ok: %s" % (summary or "passed"), flush=True)
    sys.exit(0)
