"""A loopback HTTP server with Range support for tests (stdlib only; bounded, shut down on exit)."""

from __future__ import annotations

import contextlib
import functools
import http.server
import re
import threading
import time
from collections.abc import Iterator
from pathlib import Path

__all__ = ["FaultyConnectionHandler", "RangeHandler", "serve_directory"]


class RangeHandler(http.server.SimpleHTTPRequestHandler):
    """Serves files with Range support; ``server.mode`` = "range", "ignore_range" (always 200), "bad_206",
    "status_500" (every .tar request fails), "flaky_500" (each .tar fails twice, then works) or "corrupt" (a
    .tar's bytes are damaged in transfer)."""

    def do_GET(self) -> None:
        self.server.requests.append(self.path)
        if self.server.mode in ("status_500", "flaky_500") and self.path.endswith(".tar"):
            seen = self.server.failures.get(self.path, 0)
            if self.server.mode == "status_500" or seen < 2:  # flaky: each shard fails twice, then works
                self.server.failures[self.path] = seen + 1
                self.send_error(500)
                return
        path = Path(self.translate_path(self.path))
        if not path.is_file():
            self.send_error(404)
            return
        data = path.read_bytes()
        m = re.fullmatch(r"bytes=(\d+)-(\d+)", self.headers.get("Range", ""))
        if m is None or self.server.mode == "ignore_range":
            code, body, headers = 200, data, {}
        elif int(m[1]) >= len(data):
            code, body, headers = 416, b"", {"Content-Range": f"bytes */{len(data)}"}
        else:
            a, b = int(m[1]), min(int(m[2]), len(data) - 1)  # clamped at the end of the file, as RFC 9110 says
            body = data[a:b + 1]
            if self.server.mode == "bad_206":
                body = body[:-1]
            code, headers = 206, {"Content-Range": f"bytes {a}-{b}/{len(data)}"}
        if self.server.mode == "corrupt" and self.path.endswith(".tar") and body:
            body = bytearray(body)
            body[len(body) // 2] ^= 0x01  # wrong bytes, right length
            body = bytes(body)
        self.send_response(code)
        for k, v in {**headers, "Content-Length": str(len(body))}.items():
            self.send_header(k, v)
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args) -> None:
        pass


class FaultyConnectionHandler(RangeHandler):
    """`RangeHandler` plus faults of the connection itself, for .tar files (``serve_directory(...,
    handler=FaultyConnectionHandler)``). ``server.mode``: "drop_once" (a .tar's first response declares its full
    Content-Length, then the connection closes after half the body; later requests are served whole), "drop"
    (every response is cut so), "trickle" (the body comes one byte per ``server.trickle_s`` seconds, default 1);
    any other mode is `RangeHandler`'s. ``server.honour_range`` (default True): False answers every request with
    200 and the whole file. Every request's Range header (or None) is appended to ``server.ranges``."""

    def do_GET(self) -> None:
        vars(self.server).setdefault("ranges", []).append(self.headers.get("Range"))
        mode = self.server.mode
        if mode not in ("drop_once", "drop", "trickle") or not self.path.endswith(".tar"):
            super().do_GET()
            return
        self.server.requests.append(self.path)
        path = Path(self.translate_path(self.path))
        data = path.read_bytes()
        m = re.fullmatch(r"bytes=(\d+)-(\d*)", self.headers.get("Range", ""))
        if m is None or not getattr(self.server, "honour_range", True):
            code, body, headers = 200, data, {}
        else:
            a, b = int(m[1]), min(int(m[2] or len(data) - 1), len(data) - 1)
            code, body, headers = 206, data[a:b + 1], {"Content-Range": f"bytes {a}-{b}/{len(data)}"}
        self.send_response(code)
        for k, v in {**headers, "Content-Length": str(len(body))}.items():
            self.send_header(k, v)
        self.end_headers()
        seen = self.server.failures.get(self.path, 0)
        self.server.failures[self.path] = seen + 1
        if mode == "trickle":
            pause = getattr(self.server, "trickle_s", 1.0)
            for i in range(len(body)):
                try:
                    self.wfile.write(body[i:i + 1])
                    self.wfile.flush()
                except OSError:  # the client gave up
                    return
                time.sleep(pause)
        elif mode == "drop" or seen == 0:
            self.wfile.write(body[:len(body) // 2])
            self.close_connection = True  # the server closes the socket: the client sees the body end early
        else:
            self.wfile.write(body)


@contextlib.contextmanager
def serve_directory(root: Path, monkeypatch=None, handler: type[RangeHandler] = RangeHandler
                    ) -> Iterator[tuple[str, http.server.ThreadingHTTPServer]]:
    """Serve ``root`` on 127.0.0.1 (a free port) with ``handler``; yields (base URL, server). Proxies are
    bypassed."""
    if monkeypatch is not None:
        for var in ("http_proxy", "HTTP_PROXY", "https_proxy", "HTTPS_PROXY", "all_proxy", "ALL_PROXY"):
            monkeypatch.delenv(var, raising=False)
        monkeypatch.setenv("no_proxy", "127.0.0.1,localhost")
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), functools.partial(handler, directory=root))
    server.mode, server.requests, server.failures = "range", [], {}
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}", server
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)
