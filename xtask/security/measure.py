#!/usr/bin/env python3
"""Before/after figures for docs/security.md: run the given `plotstream` binary and replay the
memory and lockout findings of the security review against it, on loopback only.

    python3 xtask/security/measure.py target/release/plotstream

Prints one JSON object. Each run starts its own server on a free port and stops it by PID.
"""
import json
import socket
import subprocess
import sys
import time


def start(binary, *args):
    p = subprocess.Popen([binary, "serve", "--in-memory", "--listen", "127.0.0.1:0", *args],
                         stderr=subprocess.PIPE, stdout=subprocess.DEVNULL, text=True)
    for line in p.stderr:
        if line.startswith("plotstream listening on http://"):
            host, port = line.strip().rsplit("/", 1)[-1].split(":")
            return p, (host, int(port))
    raise SystemExit("server did not start")


def request(addr, data, local=None, timeout=60):
    s = socket.socket()
    if local:
        s.bind((local, 0))
    s.settimeout(timeout)
    s.connect(addr)
    s.sendall(data)
    out = b""
    while True:
        try:
            b = s.recv(65536)
        except socket.timeout:
            break
        if not b:
            break
        out += b
    s.close()
    head, _, body = out.partition(b"\r\n\r\n")
    status = int(head.split(b" ")[1]) if head.startswith(b"HTTP/") else 0
    return status, body


def post(addr, path, body, local=None):
    body = body.encode() if isinstance(body, str) else body
    return request(addr, b"POST %s HTTP/1.1\r\nHost: x\r\nContent-Length: %d\r\n\r\n%s"
                   % (path.encode(), len(body), body), local)


def rss_mib(pid):
    for line in open("/proc/%d/status" % pid):
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0


def grids(binary):
    """Finding 5: three 16 MiB grids."""
    p, addr = start(binary)
    try:
        parts, size, i = [], 0, 0
        while size < 16 * 1024 * 1024 - 100:
            v = "%d.%06d" % (i % 1000, i % 999983)
            parts.append(v)
            size += len(v) + 1
            i += 1
        body = '{"data": {"cols": {"c": {"order": 0, "data": [%s]}}}}' % ",".join(parts)
        time.sleep(0.3)
        before = rss_mib(p.pid)
        statuses = [post(addr, "/v2/grids", body)[0] for _ in range(3)]
        time.sleep(0.5)
        return {"statuses": statuses, "rss_before_mib": round(before), "rss_after_mib": round(rss_mib(p.pid)),
                "sent_mib": round(3 * len(body) / 2**20)}
    finally:
        p.kill()
        p.wait()


def flood(binary):
    """Finding 8: one request with a new streamtoken on each of 10 000 lines, then a new token
    from another address."""
    p, addr = start(binary)
    try:
        chunks = []
        for i in range(10000):
            line = '{"x":1,"y":1,"streamtoken":"flood%05d"}\n' % i
            chunks.append("%x\r\n%s\r\n" % (len(line), line))
        body = "".join(chunks) + "0\r\n\r\n"
        status, _ = request(addr, ("POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n" + body).encode())
        other, _ = request(addr, b"POST / HTTP/1.1\r\nplotly-streamtoken: honest1234\r\nTransfer-Encoding: chunked\r\n\r\n"
                           b"e\r\n{\"x\":1,\"y\":1}\n\r\n0\r\n\r\n", local="127.0.0.2")
        return {"flood_status": status, "other_peer_new_stream_status": other}
    finally:
        p.kill()
        p.wait()


def index(binary, n=20000):
    """Finding 16: 20 000 anonymous plots, then GET /."""
    p, addr = start(binary)
    try:
        created = 0
        for i in range(n):
            # Twenty user names, so a per-user file cap is not what limits the page.
            form = ('platform=nodejs&version=1.0.4&args=[{"x":[1],"y":[2]}]&kwargs={"filename":"n%d","fileopt":"new"}'
                    '&un=u%d&key=k&origin=plot' % (i, i % 20))
            status, body = post(addr, "/clientresp", form)
            if status == 200 and json.loads(body).get("error") == "":
                created += 1
        _, page = request(addr, b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
        return {"plots_created": created, "index_bytes": len(page)}
    finally:
        p.kill()
        p.wait()


if __name__ == "__main__":
    binary = sys.argv[1]
    print(json.dumps({"grids": grids(binary), "flood": flood(binary), "index": index(binary)}))
