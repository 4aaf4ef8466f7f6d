"""A real HTTP server on 127.0.0.1 for tests, with scriptable faults per path.

Usage::

    with LocalServer() as server:
        server.routes["/data/objects.csv"] = csv_bytes          # static body
        server.faults["/data/objects.csv"] = [500]              # first request 500, then the body
        url = server.url + "/data/objects.csv"

A route may also be a callable ``(handler) -> Response`` for dynamic content (e.g. IIIF resizing).
Faults are consumed one per request: an int status, ``("retry_after", status, seconds)``,
``("sleep", seconds)`` (delay before answering, to trigger client timeouts) or ``("truncate", nbytes)``.
Every request is logged in ``server.requests`` as ``(method, path, headers)``.
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Callable
from urllib.parse import urlsplit


@dataclass
class Response:
    status: int = 200
    body: bytes = b""
    headers: dict[str, str] = field(default_factory=dict)


class _Handler(BaseHTTPRequestHandler):
    server: "_Server"

    def log_message(self, format: str, *args: Any) -> None:  # silence stderr
        pass

    def do_HEAD(self) -> None:
        self._serve(head=True)

    def do_GET(self) -> None:
        self._serve(head=False)

    def _serve(self, head: bool) -> None:
        owner = self.server.owner
        path = urlsplit(self.path).path
        with owner.lock:
            owner.requests.append((self.command, self.path, dict(self.headers)))
            pending = owner.faults.get(path)
            fault = pending.pop(0) if pending else None
        truncate: int | None = None
        if isinstance(fault, int):
            return self._send(Response(fault, b"fault"), head)
        if isinstance(fault, tuple) and fault[0] == "retry_after":
            return self._send(Response(fault[1], b"slow down", {"Retry-After": str(fault[2])}), head)
        if isinstance(fault, tuple) and fault[0] == "sleep":
            time.sleep(fault[1])
        if isinstance(fault, tuple) and fault[0] == "truncate":
            truncate = fault[1]
        route = owner.routes.get(path)
        if route is None and owner.fallback is not None:
            route = owner.fallback
        if route is None:
            return self._send(Response(404, b"not found"), head)
        response = route(self) if callable(route) else Response(200, route)
        if isinstance(response, (bytes, bytearray)):
            response = Response(200, bytes(response))
        etag = response.headers.get("ETag")
        if etag and self.headers.get("If-None-Match") == etag:
            return self._send(Response(304, b"", {"ETag": etag}), head)
        self._send(response, head, truncate)

    def _send(self, response: Response, head: bool, truncate: int | None = None) -> None:
        try:
            self.send_response(response.status)
            self.send_header("Content-Length", str(len(response.body)))
            for key, value in response.headers.items():
                self.send_header(key, value)
            self.end_headers()
            if not head:
                body = response.body if truncate is None else response.body[:truncate]
                self.wfile.write(body)
                if truncate is not None:
                    self.wfile.flush()
                    self.close_connection = True
        except (BrokenPipeError, ConnectionResetError):
            pass


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    owner: "LocalServer"


class LocalServer:
    """Threaded HTTP server on 127.0.0.1 (random free port); use as a context manager."""

    def __init__(self) -> None:
        self.routes: dict[str, Any] = {}
        self.faults: dict[str, list[Any]] = {}
        self.fallback: Callable[[BaseHTTPRequestHandler], Any] | None = None
        self.requests: list[tuple[str, str, dict[str, str]]] = []
        self.lock = threading.Lock()
        self._httpd = _Server(("127.0.0.1", 0), _Handler)
        self._httpd.owner = self
        self._thread = threading.Thread(target=self._httpd.serve_forever, daemon=True)

    @property
    def url(self) -> str:
        host, port = self._httpd.server_address[:2]
        return f"http://{host}:{port}"

    def count(self, path_prefix: str = "/", method: str | None = None) -> int:
        """Number of requests whose path starts with ``path_prefix`` (optionally of one method)."""
        with self.lock:
            return sum(1 for m, p, _ in self.requests if p.startswith(path_prefix) and (method is None or m == method))

    def __enter__(self) -> "LocalServer":
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._httpd.shutdown()
        self._httpd.server_close()
