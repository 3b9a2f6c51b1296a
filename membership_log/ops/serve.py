"""``membership serve``: Prometheus metrics, the dashboard and a JSON API over one store.

Stdlib ``http.server`` (a ``ThreadingHTTPServer``): one process reading one store, a scrape
every few seconds and one browser tab polling; no framework is needed for that. Routes:

=============================  ============================================================
``GET /metrics``               Prometheus text exposition, fresh at each scrape
                               (``?observer=`` picks one node's log on a central store)
``GET /``                      the dashboard (one self-contained page, ``dashboard.html``)
``GET /api/state?at=T``        as ``membership state --json``
``GET /api/audit?since&until&node``     as ``membership audit --json``
``GET /api/replay?since&until&node``    as ``membership replay --json`` (JSON lines, streamed)
``GET /api/heads``             ``{origin: head seq}``: changes whenever anything is recorded
``GET /api/timeline.svg?since&until&node``  the picture ``membership timeline`` draws
=============================  ============================================================

Every ``/api`` route also takes ``observer``. Times are those of the commands (ISO 8601,
``now``, ``15m ago``, ``@N``); an empty parameter is the same as none, and ``_`` (a cache
buster) is ignored.

Each request opens the store, reads, and closes it: nothing is held between requests, no
write lock is ever taken (SQLite readers of a WAL store never block the handler), and a
store that is replaced, missing or damaged answers 503 until it is back, while the process
keeps serving. Errors are one line of text: 400 for a bad parameter, 404 for an unknown
path, 503 when the store cannot be read.

:class:`Api` holds the routes without any socket, so tests and benchmarks call it directly.
"""

from __future__ import annotations

import ipaddress
import sys
import threading
import urllib.parse
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from ..core.clock import now_us
from ..core.errors import MembershipError, StoreError
from ..render import exposition, jsondoc, timeline
from ..render import tables as render

DEFAULT_LISTEN = "127.0.0.1:9137"

TEXT = "text/plain; charset=utf-8"
JSON = "application/json"
JSON_LINES = "application/x-ndjson"
SVG = "image/svg+xml"
HTML = "text/html; charset=utf-8"

#: The dashboard runs its own inline script and style and talks only to this server; node
#: names are hostile input, so nothing else may load or run, even if escaping failed.
DASHBOARD_CSP = ("default-src 'none'; script-src 'unsafe-inline'; style-src 'unsafe-inline'; "
                 "img-src 'self'; connect-src 'self'; base-uri 'none'; form-action 'none'; "
                 "frame-ancestors 'none'")
SVG_CSP = "default-src 'none'; style-src 'unsafe-inline'"

#: The parameters each route takes; anything else is a 400 (a typo like ``?sinec=`` must not
#: silently answer for the whole log).
ROUTES = {
    "/metrics": ("observer",),
    "/": (),
    "/api/state": ("at", "observer"),
    "/api/audit": ("since", "until", "node", "observer"),
    "/api/replay": ("since", "until", "node", "observer"),
    "/api/heads": (),
    "/api/timeline.svg": ("since", "until", "node", "observer"),
}


class BadRequest(MembershipError):
    """A parameter the API cannot use (HTTP 400)."""


@dataclass
class Response:
    status: int
    content_type: str
    body: bytes | Iterable[bytes]
    headers: dict[str, str] = field(default_factory=dict)


def text_response(status: int, message: str) -> Response:
    """One line of text; control characters and bytes that were not UTF-8 shown escaped."""
    line = render.printable(" ".join(message.split()) or "error")
    return Response(status, TEXT, (line + "\n").encode("utf-8"))


def parse_listen(text: str) -> tuple[str, int]:
    """``HOST:PORT`` (``[::1]:9137`` for IPv6) -> (host, port); ValueError otherwise."""
    host, sep, port = text.rpartition(":")
    if host.startswith("[") and host.endswith("]"):
        host = host[1:-1]
    if not sep or not host or not port.isdigit() or not 0 <= int(port) <= 65535:
        raise ValueError(f"{text!r} is not HOST:PORT (e.g. {DEFAULT_LISTEN}, 0.0.0.0:9137, "
                         f"[::1]:9137)")
    return host, int(port)



def metrics_text(store, observer: str | None = None, now: int | None = None) -> bytes:
    """The exposition of a store (``membership metrics`` and ``GET /metrics``). On a node
    store the view is the node's own, so it is named by the node (``observer`` label of
    ``membership_observer_info``) unless ``observer`` says otherwise."""
    from ..history import api as history

    snapshot = history.metrics(store, observer, now)
    if snapshot.get("observer") is None and not store.scope(None).merged:
        snapshot = {**snapshot, "observer": store.origin_name()}
    return exposition.render(snapshot)


def dashboard_html() -> bytes:
    """The dashboard page, shipped inside the package."""
    from importlib.resources import files

    return files("membership_log.ops").joinpath("dashboard.html").read_bytes()


class _JsonLines:
    """A text stream that ``jsondoc.write_lines`` writes into, kept as byte chunks."""

    def __init__(self) -> None:
        self.chunks: list[bytes] = []

    def write(self, s: str) -> None:
        self.chunks.append(s.encode("ascii"))  # render's JSON is ASCII only

    def flush(self) -> None:
        pass


class Api:
    """The routes over the store at ``db_url``. ``observer`` is the default view (``serve
    --observer``); ``?observer=`` overrides it. ``on_store_error`` hears each 503's reason."""

    def __init__(self, db_url: str, observer: str | None = None,
                 clock: Callable[[], int] = now_us,
                 on_store_error: Callable[[StoreError | None], None] | None = None) -> None:
        self.db_url, self.observer, self.clock = db_url, observer, clock
        self.on_store_error = on_store_error or (lambda e: None)
        self._page: bytes | None = None

    def _open(self):
        from ..history import api as history

        return history.open_store(self.db_url)

    def respond(self, target: str) -> Response:
        """The response to ``GET target`` (path and query)."""
        parts = urllib.parse.urlsplit(target)
        path = parts.path
        if path not in ROUTES:
            return text_response(404, f"no such page: {path[:200]} (try / or /metrics)")
        try:
            params = self._params(path, parts.query)
            response = getattr(self, "_" + (path.strip("/").replace("/", "_")
                                            .replace(".", "_") or "index"))(params)
        except StoreError as e:
            self.on_store_error(e)
            return text_response(503, f"the store cannot be read: {e}")
        except (MembershipError, ValueError) as e:  # a bad parameter, or a question the
            return text_response(400, str(e))       # log cannot answer as asked (@N merged)
        if path != "/":
            self.on_store_error(None)
        return response

    def _params(self, path: str, query: str) -> dict[str, str]:
        allowed = ROUTES[path]
        params: dict[str, str] = {}
        try:
            pairs = urllib.parse.parse_qsl(query, keep_blank_values=True, strict_parsing=False,
                                           errors="strict", max_num_fields=20)
        except (ValueError, UnicodeDecodeError) as e:
            raise BadRequest(f"bad query string: {e}") from None
        for name, value in pairs:
            if name == "_":
                continue  # a cache buster (the dashboard reloads the timeline picture so)
            if path != "/" and name not in allowed:
                shown = ", ".join(allowed) or "none"
                raise BadRequest(f"unknown parameter {name[:60]!r} for {path} (it takes: "
                                 f"{shown})")
            if name in params:
                raise BadRequest(f"parameter {name[:60]!r} given twice")
            params[name] = value
        return {k: v for k, v in params.items() if v != ""}

    def _time(self, params: dict[str, str], name: str):
        from ..core import timespec

        text = params.get(name)
        if text is None:
            return None
        try:
            return timespec.parse(text, self.clock())
        except ValueError as e:
            raise BadRequest(f"{name}: {e}") from None

    def _view(self, params: dict[str, str]) -> str | None:
        return params.get("observer", self.observer)

    # -- routes -----------------------------------------------------------------------------

    def _index(self, params) -> Response:
        if self._page is None:
            self._page = dashboard_html()
        return Response(200, HTML, self._page, {"Content-Security-Policy": DASHBOARD_CSP})

    def _metrics(self, params) -> Response:
        with self._open() as store:
            body = metrics_text(store, self._view(params))
        return Response(200, exposition.CONTENT_TYPE, body)

    def _api_heads(self, params) -> Response:
        from ..history import api as history

        with self._open() as store:
            doc = {"role": store.role, "heads": history.heads(store)}
        return Response(200, JSON, jsondoc.encode(doc).encode("ascii"))

    def _api_state(self, params) -> Response:
        from ..history import api as history

        at = self._time(params, "at")
        with self._open() as store:
            now = history.state_at(store, at, self._view(params))
        return Response(200, JSON, jsondoc.encode(jsondoc.state_doc(now)).encode("ascii"))

    def _api_audit(self, params) -> Response:
        from ..history import api as history

        since, until = self._time(params, "since"), self._time(params, "until")
        with self._open() as store:
            doc = history.audit(store, since, until, params.get("node"), self._view(params),
                                now=self.clock(), clip=True)
        return Response(200, JSON, jsondoc.audit_text(doc).encode("ascii"))

    def _api_timeline_svg(self, params) -> Response:
        from ..history import api as history

        since, until = self._time(params, "since"), self._time(params, "until")
        with self._open() as store:
            svg = timeline.picture(history.audit(store, since, until, params.get("node"),
                                                 self._view(params), now=self.clock(),
                                                 clip=True))
        return Response(200, SVG, svg.encode("utf-8"), {"Content-Security-Policy": SVG_CSP})

    def _api_replay(self, params) -> Response:
        """Streamed: the first record is read before answering (so a bad window is a 400,
        not a broken 200), the rest as the client takes them."""
        from ..history import api as history

        since, until = self._time(params, "since"), self._time(params, "until")
        store = self._open()
        try:
            records = history.replay(store, since, until, params.get("node"),
                                     self._view(params))
            first = next(records, None)
        except BaseException:
            store.close()
            raise
        return Response(200, JSON_LINES, self._stream(store, first, records))

    @staticmethod
    def _stream(store, first, records) -> Iterator[bytes]:
        try:
            if first is None:
                return
            buf = _JsonLines()

            def chained():
                yield first
                yield from records

            # write_json_lines flushes every 512 records: hand over what it wrote so far.
            source = (jsondoc.replay_doc(r) for r in chained())
            batch: list = []
            for record in source:
                batch.append(record)
                if len(batch) == 512:
                    jsondoc.write_lines(buf, batch)
                    yield b"".join(buf.chunks)
                    buf.chunks.clear()
                    batch = []
            if batch:
                jsondoc.write_lines(buf, batch)
                yield b"".join(buf.chunks)
        finally:
            store.close()


# -- the HTTP server ---------------------------------------------------------------------------


def _loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


class _Handler(BaseHTTPRequestHandler):
    server_version = "membership-serve"
    api: Api
    allowed_hosts: frozenset[str] | None
    log_error_line: Callable[[str], None]

    def do_GET(self) -> None:  # noqa: N802 -- http.server's naming
        if not self._host_ok():
            self._send(text_response(421, "this server answers only to the address it "
                                          "listens on (a DNS rebinding guard)"))
            return
        try:
            response = self.api.respond(self.path)
        except Exception as e:  # noqa: BLE001 -- a bug answers 500 and the server goes on
            self.log_error_line(f"GET {render.printable(self.path[:200])}: "
                                f"{type(e).__name__}: {render.printable(str(e))}")
            response = text_response(500, f"internal error: {type(e).__name__}")
        self._send(response)

    def _host_ok(self) -> bool:
        """Bound to loopback, answer only requests addressed to loopback: a web page must
        not reach the log through a DNS name rebound to 127.0.0.1."""
        if self.allowed_hosts is None:
            return True
        host = (self.headers.get("Host") or "").strip().lower()
        if host.startswith("["):
            host = host[1:].partition("]")[0]
        else:
            host = host.rpartition(":")[0] if host.count(":") == 1 else host
        return host in self.allowed_hosts or _loopback(host)

    def _send(self, response: Response) -> None:
        self.send_response(response.status)
        self.send_header("Content-Type", response.content_type)
        self.send_header("Cache-Control", "no-store")
        self.send_header("X-Content-Type-Options", "nosniff")
        for name, value in response.headers.items():
            self.send_header(name, value)
        body = response.body
        if isinstance(body, bytes):
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)
            return
        self.end_headers()  # HTTP/1.0: the stream ends when the connection closes
        try:
            for chunk in body:
                self.wfile.write(chunk)
        except (BrokenPipeError, ConnectionResetError):
            pass  # the client went away; the generator's finally closes the store
        except Exception as e:  # noqa: BLE001 -- the 200 is sent: cut the stream short
            self.log_error_line(f"GET {render.printable(self.path[:200])}: stream cut: "
                                f"{type(e).__name__}: {render.printable(str(e))}")
        finally:
            close = getattr(body, "close", None)
            if close is not None:
                close()

    def log_message(self, format: str, *args) -> None:  # noqa: A002
        pass  # a scrape every 15 s is not news; errors are logged where they happen


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    block_on_close = False  # a stop must not wait for a long replay stream to finish


def make_server(api: Api, host: str, port: int,
                log: Callable[[str], None] = lambda line: None) -> ThreadingHTTPServer:
    """A server for ``api`` bound to ``host:port`` (port 0: any free one)."""
    import socket

    allowed = frozenset({host.lower(), "localhost"}) if _loopback(host) else None
    handler = type("Handler", (_Handler,), {"api": api, "allowed_hosts": allowed,
                                            "log_error_line": staticmethod(log)})
    server_class = _Server
    if ":" in host:
        server_class = type("Server6", (_Server,), {"address_family": socket.AF_INET6})
    try:
        return server_class((host, port), handler)
    except OSError as e:
        raise MembershipError(f"cannot listen on {host}:{port}: {e.strerror or e}") from None


class _StoreTrouble:
    """Logs once that the store cannot be read (the 503s), and once that it can again."""

    def __init__(self, log: Callable[[str], None]) -> None:
        self.log = log
        self.lock = threading.Lock()
        self.down = False

    def __call__(self, error: StoreError | None) -> None:
        with self.lock:
            if error is not None and not self.down:
                self.down = True
                self.log(f"answering 503: {render.printable(str(error))} (reported again "
                         f"once the store is readable)")
            elif error is None and self.down:
                self.down = False
                self.log("the store is readable again")


def serve(db_url: str, listen: str = DEFAULT_LISTEN, observer: str | None = None,
          log: Callable[[str], None] | None = None,
          ready: Callable[[ThreadingHTTPServer], None] | None = None) -> None:
    """Serve until interrupted (KeyboardInterrupt; the CLI turns SIGTERM into one)."""
    if log is None:
        def log(line: str) -> None:
            sys.stderr.write(f"membership serve: {line}\n")
            sys.stderr.flush()
    host, port = parse_listen(listen)
    api = Api(db_url, observer, on_store_error=_StoreTrouble(log))
    server = make_server(api, host, port, log)
    bound = server.server_address[1]
    shown = f"[{host}]" if ":" in host else host
    scope = "this machine only" if _loopback(host) else "the network: anyone who can " \
        "reach it reads the log"
    log(f"listening on http://{shown}:{bound}/ ({scope}): /metrics for Prometheus, / for the "
        f"dashboard, /api/...")
    try:
        with api._open():
            pass
    except StoreError as e:
        api.on_store_error(e)
    if ready is not None:
        ready(server)
    try:
        server.serve_forever(poll_interval=0.5)
    finally:
        server.server_close()
