"""HTTP with timeouts, retries (exponential backoff + jitter, ``Retry-After``) and a per-host rate limit, and
the rules of which URLs artsim fetches at all (:func:`url_host_problem`: https only, save for loopback hosts)."""

from __future__ import annotations

import email.utils
import logging
import os
import random
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Mapping
from urllib.parse import urljoin, urlsplit

import requests

from .defaults import HTTP_RETRIES, HTTP_TIMEOUT_S

log = logging.getLogger(__name__)

RETRY_STATUSES = frozenset({408, 425, 429, 500, 502, 503, 504})
REDIRECT_STATUSES = frozenset({301, 302, 303, 307, 308})
MAX_REDIRECTS = 5
USER_AGENT = "artsim/0.1 (+https://github.com/NationalGalleryOfArt/opendata)"

#: Hosts that serve NGA open-data images (``iiifurl`` in published_images.csv), plus the loopback
#: names (plain http is only ever accepted for those; tests serve images from 127.0.0.1).
NGA_IMAGE_HOSTS = ("api.nga.gov",)
LOOPBACK_HOSTS = ("127.0.0.1", "localhost", "::1")
DEFAULT_IMAGE_HOSTS = (*NGA_IMAGE_HOSTS, "127.0.0.1", "localhost")


def url_host_problem(url: str, allowed_hosts: tuple[str, ...] | None = None) -> str | None:
    """Why ``url`` may not be fetched (``None`` when it may).

    The host is what ``urllib.parse.urlsplit`` parses (the one a client connects to): userinfo
    (``user:pass@``) is refused, plain ``http`` only for loopback hosts, and with ``allowed_hosts``
    the host must be one of them (exact, case-insensitive).
    """
    try:
        parts = urlsplit(url)
        parts.port  # noqa: B018 - raises ValueError on a bad port
    except ValueError as exc:
        return f"not a valid URL ({exc})"
    if parts.scheme not in ("http", "https"):
        return f"scheme {parts.scheme!r} is not http(s)"
    if "@" in parts.netloc or parts.username is not None or parts.password is not None:
        return "user:password@ in a URL is not accepted"
    host = (parts.hostname or "").lower()
    if not host:
        return "no host"
    if parts.scheme == "http" and host not in LOOPBACK_HOSTS:
        return f"plain http is only accepted for 127.0.0.1/localhost, not host {host!r}; use https://"
    if allowed_hosts is not None and host not in allowed_hosts:
        return f"host {host!r} is not in the allowed hosts ({', '.join(allowed_hosts)})"
    return None


class FetchError(RuntimeError):
    """A URL could not be fetched after all retries; the message names the URL and the last reason."""

    def __init__(self, url: str, reason: str, status: int | None = None) -> None:
        super().__init__(f"{url}: {reason}")
        self.url = url
        self.reason = reason
        self.status = status


class UrlRefusedError(FetchError):
    """A URL (the one asked for, or a redirect target) failed the caller's ``url_check``; nothing was sent to it."""


class IncompleteBodyError(FetchError):
    """Every attempt's body ended before ``Content-Length`` bytes arrived (a truncated download)."""


#: ``url_check(url)``: ``None`` when ``url`` may be requested, else why not.
UrlCheck = Callable[[str], "str | None"]


@dataclass(frozen=True)
class Download:
    """What :meth:`HttpClient.download` wrote: body size, the response's ``Content-Type`` and attempts used.

    ``headers`` are the final response's headers (e.g. ``ETag`` / ``Last-Modified``).
    """

    url: str
    nbytes: int
    content_type: str
    attempts: int
    headers: Mapping[str, str] = field(default_factory=dict)


class _ShortBody(Exception):
    """The body ended before ``Content-Length`` bytes arrived."""


class RateLimiter:
    """At most ``per_second`` request starts per host, shared by every thread using it."""

    def __init__(self, per_second: float) -> None:
        self.interval = 1.0 / per_second if per_second > 0 else 0.0
        self._next: dict[str, float] = {}
        self._lock = threading.Lock()

    def wait(self, url: str) -> None:
        if self.interval <= 0:
            return
        host = urlsplit(url).netloc
        with self._lock:
            now = time.monotonic()
            slot = max(now, self._next.get(host, now))
            self._next[host] = slot + self.interval
        delay = slot - now
        if delay > 0:
            time.sleep(delay)


def retry_after_seconds(value: str | None, cap: float) -> float | None:
    """Parse a ``Retry-After`` header (seconds or HTTP date), capped at ``cap`` seconds."""
    if not value:
        return None
    value = value.strip()
    try:
        seconds = float(value)
    except ValueError:
        try:
            when = email.utils.parsedate_to_datetime(value)
        except (TypeError, ValueError):
            return None
        seconds = when.timestamp() - time.time()
    return min(max(seconds, 0.0), cap)


@dataclass
class HttpClient:
    """A ``requests`` session with the retry policy every artsim download uses."""

    timeout_s: float = HTTP_TIMEOUT_S
    retries: int = HTTP_RETRIES
    backoff_base_s: float = 0.5
    backoff_cap_s: float = 30.0
    requests_per_second: float = 0.0
    session: requests.Session = field(default_factory=requests.Session)
    sleep: Callable[[float], None] = time.sleep

    def __post_init__(self) -> None:
        self.session.headers.setdefault("User-Agent", USER_AGENT)
        self.limiter = RateLimiter(self.requests_per_second)
        self.requests_made = 0
        self._count_lock = threading.Lock()

    def backoff(self, attempt: int) -> float:
        """Full-jitter exponential backoff for retry number ``attempt`` (0-based)."""
        return random.uniform(0, min(self.backoff_cap_s, self.backoff_base_s * (2**attempt)))

    def get(
        self, url: str, headers: dict[str, str] | None = None, stream: bool = True, url_check: UrlCheck | None = None
    ) -> requests.Response:
        """GET with retries (see :meth:`request`)."""
        return self.request("GET", url, headers=headers, stream=stream, url_check=url_check)

    def head(self, url: str, headers: dict[str, str] | None = None, url_check: UrlCheck | None = None) -> requests.Response:
        """HEAD with retries (see :meth:`request`)."""
        return self.request("HEAD", url, headers=headers, stream=False, url_check=url_check)

    def _send(
        self, method: str, url: str, headers: dict[str, str] | None, stream: bool, url_check: UrlCheck | None
    ) -> requests.Response:
        """One request; with ``url_check``, redirects are followed here, each target checked before it is sent."""
        if url_check is None:
            self.limiter.wait(url)
            with self._count_lock:
                self.requests_made += 1
            return self.session.request(method, url, headers=headers, timeout=self.timeout_s, stream=stream)
        current = url
        for _hop in range(MAX_REDIRECTS + 1):
            self.limiter.wait(current)
            with self._count_lock:
                self.requests_made += 1
            response = self.session.request(
                method, current, headers=headers, timeout=self.timeout_s, stream=stream, allow_redirects=False
            )
            location = response.headers.get("Location")
            if response.status_code not in REDIRECT_STATUSES or not location:
                return response
            response.close()
            target = urljoin(current, location)
            problem = url_check(target)
            if problem is not None:
                raise UrlRefusedError(url, f"redirect to {target} refused: {problem}", response.status_code)
            if response.status_code == 303 and method != "HEAD":
                method = "GET"
            current = target
        raise FetchError(url, f"more than {MAX_REDIRECTS} redirects")

    def request(
        self,
        method: str,
        url: str,
        headers: dict[str, str] | None = None,
        stream: bool = True,
        url_check: UrlCheck | None = None,
    ) -> requests.Response:
        """A request with retries. Returns a 2xx or 304 response; raises :class:`FetchError` otherwise.

        Retries connection errors, timeouts and :data:`RETRY_STATUSES`; honours ``Retry-After``.
        Other 4xx statuses fail at once. With ``url_check`` (``url -> None`` or why not), ``url`` and every
        redirect target are checked *before* a request is sent to them (redirects are followed by hand);
        a refused one raises :class:`UrlRefusedError` at once.
        """
        if url_check is not None:
            problem = url_check(url)
            if problem is not None:
                raise UrlRefusedError(url, f"refused: {problem}")
        last_reason = "no attempt made"
        last_status: int | None = None
        for attempt in range(self.retries + 1):
            try:
                response = self._send(method, url, headers, stream, url_check)
            except (requests.ConnectionError, requests.Timeout) as exc:
                last_reason, last_status, wait = f"{type(exc).__name__}: {exc}", None, self.backoff(attempt)
            else:
                if response.status_code < 300 or response.status_code == 304:
                    return response
                last_status = response.status_code
                last_reason = f"HTTP {response.status_code}"
                retry_after = retry_after_seconds(response.headers.get("Retry-After"), self.backoff_cap_s)
                response.close()
                if response.status_code not in RETRY_STATUSES:
                    raise FetchError(url, last_reason, last_status)
                wait = retry_after if retry_after is not None else self.backoff(attempt)
            if attempt < self.retries:
                log.warning("%s %s failed (%s); retry %d/%d in %.2fs", method, url, last_reason, attempt + 1, self.retries, wait)
                self.sleep(wait)
        raise FetchError(url, f"{last_reason} after {self.retries + 1} attempts", last_status)

    def download(
        self,
        url: str,
        dest: Path,
        max_bytes: int | None = None,
        headers: dict[str, str] | None = None,
        chunk_size: int = 1 << 16,
        url_check: UrlCheck | None = None,
    ) -> Download:
        """GET ``url`` (with :meth:`get`'s retry policy) and stream the body into ``dest`` (overwritten, fsynced).

        A body cut short (connection dropped, read timeout mid-body, fewer bytes than ``Content-Length``)
        is transient: the whole GET is retried with backoff, up to ``retries`` more times.
        A body over ``max_bytes`` raises :class:`FetchError` at once. ``dest`` may hold a partial body
        after an error: write to a temp path (``storage.atomic_path``) and discard it. When every attempt's
        body was cut short, :class:`IncompleteBodyError` names the URL and the byte counts.
        ``url_check``: see :meth:`request`.
        """
        last_reason = "no attempt made"
        short = False
        for attempt in range(self.retries + 1):
            response = self.get(url, headers=headers, stream=True, url_check=url_check)
            try:
                nbytes = 0
                with open(dest, "wb") as handle:
                    for chunk in response.iter_content(chunk_size):
                        nbytes += len(chunk)
                        if max_bytes is not None and nbytes > max_bytes:
                            raise FetchError(url, f"body larger than {max_bytes} bytes", response.status_code)
                        handle.write(chunk)
                    handle.flush()
                    os.fsync(handle.fileno())
                _check_length(response, nbytes)
                return Download(url, nbytes, response.headers.get("Content-Type", ""), attempt + 1,
                                requests.structures.CaseInsensitiveDict(response.headers))
            except _ShortBody as exc:
                short, last_reason = True, str(exc)
            except requests.exceptions.ChunkedEncodingError as exc:  # urllib3 saw fewer bytes than Content-Length
                short, expected = True, (response.headers.get("Content-Length") or "").strip()
                encoded = bool(response.headers.get("Content-Encoding"))  # then nbytes (decoded) is not comparable
                last_reason = (f"body cut short: {nbytes} of {expected} bytes (Content-Length)"
                               if expected.isdigit() and not encoded else f"body cut short ({type(exc).__name__}: {exc})")
            except requests.RequestException as exc:
                short, last_reason = False, f"{type(exc).__name__}: {exc}"
            finally:
                response.close()
            if attempt < self.retries:
                wait = self.backoff(attempt)
                log.warning("GET %s body failed (%s); retry %d/%d in %.2fs", url, last_reason, attempt + 1, self.retries, wait)
                self.sleep(wait)
        error = IncompleteBodyError if short else FetchError
        raise error(url, f"{last_reason} after {self.retries + 1} attempts")


def _check_length(response: requests.Response, nbytes: int) -> None:
    """Raise :class:`_ShortBody` when the body does not match a ``Content-Length`` header.

    ``nbytes`` counts decoded bytes; with a ``Content-Encoding`` (gzip, ...) ``Content-Length`` counts the
    encoded bytes, so those are compared with the bytes read off the wire instead (when known).
    """
    expected = (response.headers.get("Content-Length") or "").strip()
    if not expected.isdigit():
        return
    got: int | None = nbytes
    if response.headers.get("Content-Encoding", "").strip().lower() not in ("", "identity"):
        try:
            got = int(response.raw.tell())
        except Exception:  # noqa: BLE001 - no wire count available: nothing to compare
            got = None
    if got is not None and got != int(expected):
        raise _ShortBody(f"body cut short: {got} of {expected} bytes (Content-Length)")
