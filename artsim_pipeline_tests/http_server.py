"""A real HTTP server on 127.0.0.1 for tests, with scriptable faults per path.

Usage::

    with LocalServer() as server:
        server.routes["/data/objects.csv"] = csv_bytes          # static body
        server.faults["/data/objects.csv"] = [500]              # first request 500, then the body
        url = server.url + "/data/objects.csv"

A route may also be a callable ``(handler) -> Response`` for dynamic content (e.g. IIIF resizing).
Faults are consumed one per request: an int status, ``("retry_after", status, seconds)``,
``("sleep", seconds)`` (delay before answering, to trigger client timeouts), ``("truncate", nbytes)``
(send only the first bytes, then close) or ``("stall", nbytes, seconds)`` (send the first bytes,
pause, then the rest: a download caught mid-body).
Every request is logged in ``server.requests`` as ``(method, path, headers)`` and its arrival time
(``time.monotonic()``) in ``server.request_times`` as ``(path, time)``.

:class:`IiifImages` serves IIIF-like image URLs (``/iiif/<uuid>/full/!S,S/0/default.jpg``),
resizing registered images to fit ``S``×``S`` as the IIIF image API does.
"""

from __future__ import annotations

import io
import re
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
            owner.request_times.append((path, time.monotonic()))
            pending = owner.faults.get(path)
            fault = pending.pop(0) if pending else None
        truncate: int | None = None
        stall: tuple[int, float] | None = None
        if isinstance(fault, int):
            return self._send(Response(fault, b"fault"), head)
        if isinstance(fault, tuple) and fault[0] == "retry_after":
            return self._send(Response(fault[1], b"slow down", {"Retry-After": str(fault[2])}), head)
        if isinstance(fault, tuple) and fault[0] == "sleep":
            time.sleep(fault[1])
        if isinstance(fault, tuple) and fault[0] == "truncate":
            truncate = fault[1]
        if isinstance(fault, tuple) and fault[0] == "stall":
            stall = (fault[1], fault[2])
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
        self._send(response, head, truncate, stall)

    def _send(
        self, response: Response, head: bool, truncate: int | None = None, stall: tuple[int, float] | None = None
    ) -> None:
        try:
            self.send_response(response.status)
            self.send_header("Content-Length", str(len(response.body)))
            for key, value in response.headers.items():
                self.send_header(key, value)
            self.end_headers()
            if not head:
                body = response.body if truncate is None else response.body[:truncate]
                if stall is not None:
                    self.wfile.write(body[: stall[0]])
                    self.wfile.flush()
                    time.sleep(stall[1])
                    body = body[stall[0]:]
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
        self.request_times: list[tuple[str, float]] = []
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


_IIIF_PATH = re.compile(r"^/iiif/([^/]+)/full/!(\d+),(\d+)/0/default\.jpg$")


class IiifImages:
    """IIIF-like image routes on a :class:`LocalServer` (installed as its ``fallback``).

    ``add(uuid, image)`` registers a PIL image (served as a JPEG resized to fit the requested
    ``!S,S`` box, never enlarged) or raw ``bytes`` (served as they are, for broken-body tests)
    and returns the IIIF base URL; the image URL is ``base + "/full/!S,S/0/default.jpg"``.
    """

    def __init__(self, server: LocalServer, content_type: str = "image/jpeg") -> None:
        self.server = server
        self.content_type = content_type
        self.sources: dict[str, Any] = {}
        self.content_types: dict[str, str] = {}
        self._encoded: dict[tuple[str, int, int], bytes] = {}
        self._lock = threading.Lock()
        server.fallback = self

    def add(self, uuid: str, source: Any, content_type: str | None = None) -> str:
        with self._lock:  # a replaced image is encoded afresh (not served from the old encoding)
            if self.sources.get(uuid) is not source:
                self._encoded = {key: blob for key, blob in self._encoded.items() if key[0] != uuid}
        self.sources[uuid] = source
        if content_type is not None:
            self.content_types[uuid] = content_type
        return self.base_url(uuid)

    def base_url(self, uuid: str) -> str:
        return f"{self.server.url}/iiif/{uuid}"

    @staticmethod
    def path(uuid: str, size: int) -> str:
        """The request path for ``uuid`` at IIIF size ``!size,size`` (the key for ``server.faults``)."""
        return f"/iiif/{uuid}/full/!{size},{size}/0/default.jpg"

    def __call__(self, handler: BaseHTTPRequestHandler) -> Response:
        match = _IIIF_PATH.match(urlsplit(handler.path).path)
        if match is None or match.group(1) not in self.sources:
            return Response(404, b"not found", {"Content-Type": "text/plain"})
        uuid, width, height = match.group(1), int(match.group(2)), int(match.group(3))
        source = self.sources[uuid]
        content_type = self.content_types.get(uuid, self.content_type)
        if isinstance(source, (bytes, bytearray)):
            return Response(200, bytes(source), {"Content-Type": content_type})
        key = (uuid, width, height)
        with self._lock:
            body = self._encoded.get(key)
        if body is None:
            image = source.convert("RGB")
            image.thumbnail((width, height))
            buffer = io.BytesIO()
            image.save(buffer, "JPEG", quality=90)
            body = buffer.getvalue()
            with self._lock:
                self._encoded[key] = body
        return Response(200, body, {"Content-Type": content_type})
