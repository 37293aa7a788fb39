"""The gateway's guard: what every request must pass before a handler (or the kernel) sees it.

The kernel gateway's ``notebook_http`` personality answers anyone, with ``*`` CORS when asked,
hands any body to the kernel and answers its own errors as HTML or ``{"reason": …}``. Here each
of its handlers (the notebook's endpoints, ``/public/`` static files, the 404 catch-all) gets
:class:`GuardMixin`, which, in order:

1. refuses an absurd request line or header block (414 / 431; Tornado's own limit is raised so
   that these arrive here instead of a closed connection);
2. checks the ``Host`` header when the server is bound to a loopback address (DNS rebinding: a
   page at ``http://evil.example`` resolving to 127.0.0.1), as Jupyter's ``allow_remote_access``;
3. checks ``Origin``: same-origin and the ``--allow-origin`` list pass, and only those get CORS
   headers (a page on another site cannot read answers, nor drive the API);
4. checks the token (``?token=`` or ``Authorization: token …``, compared in constant time) on
   ``/api/`` and the cache's files (``/public/renders/``, ``/public/probes/``): 401 without one,
   403 with a wrong one;
5. for POST and DELETE bodies: ``application/json`` only (415; browsers send ``text/plain``
   cross-origin without a pre-flight), at most :data:`MAX_BODY_BYTES` (413), UTF-8, not nested
   absurdly deep, no giant integers, valid JSON (400) — all before the kernel sees it; except
   ``POST /api/looks``, whose body is an image (``image/jpeg|png|webp``, at most 20 MB), handed
   on as JSON (base64) for the kernel to check;
6. tags API requests with the peer address (``X-Wga-Peer``), for fairness between clients.

``/public/`` joins two folders: the explorer page (read-only package data) and the server's
cache folder (:mod:`wga.paths`), whose ``renders/`` and ``probes/`` are served at
``/public/renders/`` and ``/public/probes/``. Every error, the gateway's own included (404
routes, 405 methods, static files), is ``{"error": "<what is wrong and what to do>"}``. The
request log never shows a token.
"""

from __future__ import annotations

import base64
import functools
import json
import logging
import os
import posixpath
import re
import secrets
from http import HTTPStatus
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from wga.errors import InvalidInput
from wga.paths import PUBLIC_CACHE_FOLDERS, RENDERS_FOLDER
from wga.serve.cache import mark_used
from wga.serve.http import MAX_BODY_BYTES, PEER_HEADER, TOKEN_ENV, parse_json_text
from wga.serve.uploads import MAX_UPLOAD_BYTES, TYPES

log = logging.getLogger(__name__)

MAX_URI_BYTES = 8 * 1024  # a request line longer than this answers 414
MAX_HEADER_BYTES = 16 * 1024  # a header block larger than this answers 431
TORNADO_HEADER_LIMIT = 1024 * 1024  # what Tornado reads before closing the connection
TORNADO_BODY_LIMIT = 64 * 1024 * 1024  # past this Tornado closes the connection itself
CORS_METHODS = "GET, POST, DELETE, OPTIONS"
CORS_HEADERS = "Content-Type, Authorization, X-Wga-Client"
CORS_EXPOSE = "Retry-After, Location"
CORS_MAX_AGE = "600"
LOOPBACK_NAMES = frozenset({"localhost", "127.0.0.1", "::1"})
_RENDER_FILE = re.compile(r"^renders/([0-9a-f]{24})\.(png|json)$")
STATE_ROUTE = r"/public/renders/(_status|[0-9a-f]{24})\.json"  # the fast path of polling
CACHE_ROUTE = r"/public/((?:{})/.*)".format("|".join(PUBLIC_CACHE_FOLDERS))  # the cache's files
_PAGE_ASSET = re.compile(r"^[\w./-]+\.(html|css|js)$")  # the page itself: public
_TOKEN_QUERY = re.compile(r"([?&]token=)[^&]*")
UPLOAD_PATH = "/api/looks"  # its body is an image (POST /api/looks), not JSON
UPLOAD_TYPES = tuple(TYPES)


def _hostname(host_header: str) -> str:
    """``Host`` without the port (``[::1]:8765`` → ``::1``), lower case."""
    host = host_header.strip().lower()
    if host.startswith("["):
        return host[1:].split("]", 1)[0]
    return host.rsplit(":", 1)[0] if host.count(":") == 1 else host


def _normal(path: str) -> str:
    """A static path as the file system will resolve it (``./a//b/../c`` → ``a/c``)."""
    return posixpath.normpath("/" + path).lstrip("/")


def _split(text: str) -> frozenset[str]:
    return frozenset(item.strip() for item in text.split(",") if item.strip())


class GuardMixin:
    """The checks above, for any Tornado ``RequestHandler``; see the module docstring."""

    needs_token = True  # static page assets (index.html, js, css) are public, as Jupyter's login

    # -- answers ------------------------------------------------------------------------------
    def refuse(self, status: int, message: str) -> None:
        self.set_status(status)  # type: ignore[attr-defined]
        self._json_headers()
        self.finish(json.dumps({"error": message}))  # type: ignore[attr-defined]

    def _json_headers(self) -> None:
        self.set_header("Content-Type", "application/json; charset=utf-8")  # type: ignore[attr-defined]
        self.set_header("Cache-Control", "no-store")  # type: ignore[attr-defined]

    def write_error(self, status_code: int, **kwargs: Any) -> None:
        """Tornado's own errors (404, 405, 403 outside the static root, 500) as JSON."""
        self._json_headers()
        self.finish(json.dumps({"error": _error_text(self, status_code)}))  # type: ignore[attr-defined]

    def set_default_headers(self) -> None:
        super().set_default_headers()  # type: ignore[misc]
        origin = self.request.headers.get("Origin")  # type: ignore[attr-defined]
        if origin and origin in self.settings.get("kg_wga_origins_set", ()):  # type: ignore[attr-defined]
            self.set_header("Access-Control-Allow-Origin", origin)  # type: ignore[attr-defined]
            self.set_header("Access-Control-Allow-Methods", CORS_METHODS)  # type: ignore[attr-defined]
            self.set_header("Access-Control-Allow-Headers", CORS_HEADERS)  # type: ignore[attr-defined]
            self.set_header("Access-Control-Expose-Headers", CORS_EXPOSE)  # type: ignore[attr-defined]
            self.set_header("Access-Control-Max-Age", CORS_MAX_AGE)  # type: ignore[attr-defined]
        self.set_header("Vary", "Origin")  # type: ignore[attr-defined]

    def options(self, *args: Any, **kwargs: Any) -> None:
        self.set_status(204)  # type: ignore[attr-defined]
        self.finish()  # type: ignore[attr-defined]

    # -- the checks ---------------------------------------------------------------------------
    def prepare(self) -> Any:
        problem = (
            self._size_problem()
            or self._host_problem()
            or self._origin_problem()
            or self._token_problem()
            or self._body_problem()
        )
        if problem is not None:
            self.refuse(*problem)
            return None
        request = self.request  # type: ignore[attr-defined]
        request.headers[PEER_HEADER] = request.remote_ip or "unknown"
        return super().prepare()  # type: ignore[misc]

    def _size_problem(self) -> tuple[int, str] | None:
        request = self.request  # type: ignore[attr-defined]
        if len(request.uri) > MAX_URI_BYTES:
            return 414, f"the address is longer than {MAX_URI_BYTES} bytes; no endpoint takes one"
        size = sum(len(k) + len(v) + 4 for k, v in request.headers.get_all())
        if size > MAX_HEADER_BYTES:
            return 431, f"the request headers are larger than {MAX_HEADER_BYTES} bytes"
        return None

    def _host_problem(self) -> tuple[int, str] | None:
        allowed = self.settings.get("kg_wga_hosts_set")  # type: ignore[attr-defined]
        if not allowed:  # bound to a public address: the token protects it
            return None
        host = _hostname(self.request.host or "")  # type: ignore[attr-defined]
        if host in allowed or host.startswith("127."):
            return None
        return 403, (
            f"this server does not answer to the host name {host[:100]!r}; open it as "
            "http://127.0.0.1:PORT (or start wga serve with --allow-host NAME)"
        )

    def _origin_problem(self) -> tuple[int, str] | None:
        origin = self.request.headers.get("Origin")  # type: ignore[attr-defined]
        if not origin:
            return None
        if origin in self.settings.get("kg_wga_origins_set", ()):  # type: ignore[attr-defined]
            return None
        if urlsplit(origin).netloc.lower() == (self.request.host or "").lower():  # type: ignore[attr-defined]
            return None
        return 403, (
            f"requests from pages at {origin[:100]} are not allowed; open the explorer page this "
            "server serves, or start wga serve with --allow-origin ORIGIN"
        )

    def _token_problem(self) -> tuple[int, str] | None:
        expected = self.settings.get("wga_token")  # type: ignore[attr-defined]
        if not expected or not self.needs_token or self.request.method == "OPTIONS":  # type: ignore[attr-defined]
            return None
        given = self.get_query_argument("token", None)  # type: ignore[attr-defined]
        header = self.request.headers.get("Authorization", "")  # type: ignore[attr-defined]
        if given is None and header.lower().startswith("token "):
            given = header[len("token ") :].strip()
        if not given:
            return 401, (
                "this server needs a token: open the page address that wga serve printed "
                "(…?token=…), or send Authorization: token …"
            )
        if not secrets.compare_digest(given.encode(), expected.encode()):
            return 403, "the token is wrong: use the one wga serve printed (or --token / WGA_TOKEN)"
        return None

    def _body_problem(self) -> tuple[int, str] | None:
        request = self.request  # type: ignore[attr-defined]
        if request.method == "POST" and request.path == UPLOAD_PATH:
            return self._upload_problem()
        if request.method not in ("POST", "PUT", "PATCH", "DELETE") or not request.body:
            return None
        if len(request.body) > MAX_BODY_BYTES:
            return 413, f"the request body is larger than {MAX_BODY_BYTES} bytes"
        kind = request.headers.get("Content-Type", "").split(";")[0].strip().lower()
        if kind != "application/json":
            return 415, (
                f"send the body as JSON with Content-Type: application/json (got "
                f"{kind[:60] or 'no Content-Type'})"
            )
        try:
            parse_json_text(request.body.decode("utf-8"))
        except UnicodeDecodeError:
            return 400, "the request body is not valid UTF-8; send JSON text in UTF-8"
        except InvalidInput as error:
            return 400, str(error)
        return None

    def _upload_problem(self) -> tuple[int, str] | None:
        """``POST /api/looks`` takes an image, not JSON: at most 20 MB of a declared image type,
        handed on to the kernel as JSON text (the bytes in base64) — the gateway passes only
        text to the kernel. The kernel checks the image itself (:mod:`wga.serve.uploads`)."""
        request = self.request  # type: ignore[attr-defined]
        if len(request.body) > MAX_UPLOAD_BYTES:
            return 413, f"the image is larger than {MAX_UPLOAD_BYTES // 2**20} MB"
        kind = request.headers.get("Content-Type", "").split(";")[0].strip().lower()
        if kind not in UPLOAD_TYPES:
            return 415, (
                f"send the image itself as the body with Content-Type: {', '.join(UPLOAD_TYPES)} "
                f"(got {kind[:60] or 'no Content-Type'})"
            )
        data = base64.b64encode(request.body).decode("ascii")
        request.body = json.dumps({"content_type": kind, "data": data}).encode("ascii")
        request.headers["Content-Type"] = "application/json"
        return None


class ApiGuardMixin(GuardMixin):
    """The notebook's endpoints: also a JSON 405 for a method the path does not have."""

    def prepare(self) -> Any:
        method = self.request.method  # type: ignore[attr-defined]
        sources = getattr(self, "sources", {})
        if method != "OPTIONS" and method not in sources:
            allowed = ", ".join(sorted(sources))
            self.set_header("Allow", allowed)  # type: ignore[attr-defined]
            self.refuse(405, f"{method} is not allowed here; this address takes {allowed}")
            return None
        return super().prepare()


def _error_text(handler: Any, status: int) -> str:
    method, path = handler.request.method, handler.request.path[:200]
    if status == 404:
        return (
            f"nothing at {path}: the API is under /api/ (GET /api/status), the explorer page "
            "at /public/index.html, renders at /public/renders/<id>.png"
        )
    if status == 405:
        return f"{method} is not allowed on {path}"
    if status == 403:
        return f"{path} is outside the folders this server serves"
    phrase = HTTPStatus(status).phrase if status in HTTPStatus._value2member_map_ else "error"
    return f"{phrase.lower()} ({status}) for {method} {path}; see the server log"


def log_request(handler: Any) -> None:
    """Tornado's access log line, with any token in the query replaced by ``…``; successful
    reads of ``/public/`` files (pages poll them several times a second) are not logged."""
    status = handler.get_status()
    if (
        status < 400
        and handler.request.method == "GET"
        and handler.request.path.startswith("/public/")
    ):
        return
    level = logging.INFO if status < 400 else logging.WARNING if status < 500 else logging.ERROR
    uri = _TOKEN_QUERY.sub(r"\1…", handler.request.uri[:300])
    elapsed = 1000.0 * handler.request.request_time()
    logging.getLogger("tornado.access").log(
        level, "%d %s %s %.1fms", status, handler.request.method, uri, elapsed
    )


@functools.cache
def _file_handlers() -> tuple[type, type, type]:
    """The handlers of ``/public/``: the page, the cache's files, and the fast path of polling."""
    import tornado.web

    class PageFileHandler(GuardMixin, tornado.web.StaticFileHandler):
        """The page's own files, which browsers revalidate (a new version of wga may change
        them); its scripts, styles and HTML are public, as Jupyter's login page is."""

        def prepare(self) -> Any:
            self.needs_token = not _PAGE_ASSET.match(_normal(self.path_args[0]))  # type: ignore[attr-defined]
            return super().prepare()

        def set_extra_headers(self, path: str) -> None:
            self.set_header("Cache-Control", "no-cache")

    class CacheFileHandler(GuardMixin, tornado.web.StaticFileHandler):
        """The cache's files (renders, rewritten while they progress; probe crops): they need
        the token, and reading a render's marks it used."""

        def set_extra_headers(self, path: str) -> None:
            self.set_header("Cache-Control", "no-cache")
            match = _RENDER_FILE.match(_normal(path))
            if match and self.get_status() == 200:
                mark_used(Path(self.root) / "renders" / f"{match.group(1)}.json")

    class RenderStateHandler(GuardMixin, tornado.web.RequestHandler):
        """The fast path: a job's state file (or the queue's status file), read and sent as is:
        none of the static handler's hashing and headers, as pages poll these all the time."""

        def initialize(self, folder: Path) -> None:
            self.folder = folder

        def get(self, name: str) -> None:
            path = self.folder / f"{name}.json"
            try:
                data = path.read_bytes()
            except OSError:
                raise tornado.web.HTTPError(404) from None
            if name != "_status":
                mark_used(path)
            self._json_headers()
            self.finish(data)

    return PageFileHandler, CacheFileHandler, RenderStateHandler


@functools.cache
def personality_class() -> type:
    """The personality class, built on first use: the launcher need not import the gateway."""
    import tornado.web
    from kernel_gateway.notebook_http import NotebookHTTPPersonality
    from kernel_gateway.notebook_http.handlers import NotebookAPIHandler
    from traitlets import Unicode

    page_handler, cache_handler, state_handler = _file_handlers()

    def guarded(handler: type) -> type:
        if issubclass(handler, tornado.web.StaticFileHandler):
            return page_handler
        mixin = ApiGuardMixin if issubclass(handler, NotebookAPIHandler) else GuardMixin
        return type(f"Guarded{handler.__name__}", (mixin, handler), {})

    class GuardedNotebookHTTPPersonality(NotebookHTTPPersonality):
        """``notebook_http`` with the guard on every handler (API, static files, errors)."""

        wga_origins = Unicode("", config=True, help="origins allowed to call the API (comma list)")
        wga_hosts = Unicode(
            "", config=True, help="Host names answered ('' answers any: off-loopback binds)"
        )
        wga_cache = Unicode(
            "", config=True, help="the cache folder: its renders/ and probes/ under /public/"
        )

        def __init__(self, *args: Any, **kwargs: Any) -> None:
            super().__init__(*args, **kwargs)
            _widen_tornado_limits(self.parent, self)
            if int(self.parent.log_level) > logging.INFO:  # -v (INFO) shows the chatter
                self.log.addFilter(_no_chatter)

        def create_request_handlers(self) -> list[tuple]:
            handlers = [
                (pattern, guarded(handler), *rest)
                for pattern, handler, *rest in super().create_request_handlers()
            ]
            if self.wga_cache:  # before the page's /public/(.*): the cache's files win
                cache = Path(self.wga_cache)
                handlers[:0] = [
                    (STATE_ROUTE, state_handler, {"folder": cache / RENDERS_FOLDER}),
                    (CACHE_ROUTE, cache_handler, {"path": str(cache)}),
                ]
            return handlers

    return GuardedNotebookHTTPPersonality


# The gateway's lines a user can do nothing about: the kernel's idle/status messages that arrive
# between requests (every start, and after a restart), and its note that the launcher stopped it
# (the launcher says so itself). Shown with -v (INFO and below).
_CHATTER = ("Could not find callback for kernel_id", "received signal")


def _no_chatter(record: logging.LogRecord) -> bool:
    return not str(record.msg).startswith(_CHATTER)


def _widen_tornado_limits(app: Any, personality: Any) -> None:
    """After the gateway builds its server: Tornado lets long request lines and big bodies
    through to the guard (which answers them in JSON), and the settings the guard reads."""
    original = app.init_http_server

    def init_http_server() -> None:
        original()
        params = app.http_server.conn_params
        params.max_header_size = TORNADO_HEADER_LIMIT
        params.max_body_size = TORNADO_BODY_LIMIT
        settings = app.web_app.settings
        settings["log_function"] = log_request
        settings["wga_token"] = os.environ.get(TOKEN_ENV) or None
        settings["kg_wga_origins_set"] = _split(personality.wga_origins)
        hosts = _split(personality.wga_hosts)
        settings["kg_wga_hosts_set"] = hosts | LOOPBACK_NAMES if hosts else frozenset()

    app.init_http_server = init_http_server
