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

A replay is streamed without holding the store while the client takes it: the stream reads
the log a page (:data:`REPLAY_PAGE` events, keyset by seq) at a time, each page in a store
opened and closed for it, and keeps the fold's state in memory between pages. So a client
that stalls (``curl .../api/replay | less``) pins no read transaction: the WAL can be
checkpointed and does not grow. The end is fixed when the stream begins (the head then), so
the bytes are exactly those ``membership replay --json`` prints at that moment.

Limits, so that slow or stalled clients cannot starve Prometheus (all per process):

- :data:`REQUEST_TIMEOUT_S` (10 s, or ``--client-timeout`` if lower): the whole request
  (line and headers) must arrive within it, or the connection is answered 408 and closed.
  Prometheus, curl and browsers send a GET in one packet.
- ``--client-timeout`` (:data:`CLIENT_TIMEOUT_S`, 30 s): no byte in for that long while
  reading, or no progress for that long while the answer is sent (written in slices of
  :data:`SEND_SLICE`), and the client is dropped (one log line when it was the answer);
  a stalled stream holds neither a store nor a transaction meanwhile, only its socket.
- at most :data:`STORE_READERS` (4) requests read the store at once (more buys nothing on
  a machine this size); each open store costs up to :data:`FDS_PER_STORE` file
  descriptors (SQLite: the database, its -wal and -shm; PostgreSQL: a socket). Others
  wait up to 10 s for a turn, then 503.
- a cap on open connections, from the open-file limit at the moment (:func:`connection_cap`:
  the limit less :data:`RESERVED_FDS` for the process itself and the store readers'
  descriptors, at most :data:`MAX_CONNECTIONS`; 24 at a limit of 64, 256 at 1024), so that
  the store can always be opened. At the cap, a new connection takes the place of the one
  that has waited longest without sending its request (answered 503 and closed), or, if
  every connection is being answered, is answered 503 itself. One log line when the cap
  is reached and one when connections are under it again.
- a client that hangs up before its answer (a scrape timeout) is not news: no log line.

:class:`Api` holds the routes without any socket, so tests and benchmarks call it directly.
"""

from __future__ import annotations

import ipaddress
import resource
import socket
import sys
import threading
import time
import urllib.parse
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from ..core.clock import now_us
from ..core.errors import MembershipError, StoreError
from ..core.outage import Outage
from ..render import exposition, jsondoc, timeline
from ..render import tables as render

DEFAULT_LISTEN = "127.0.0.1:9137"

#: An observer whose latest event is older than this is shown as stale on the dashboard:
#: three missed heartbeats of the shipped timer (every 5 minutes).
STALE_AFTER_S = 900.0

#: Seconds a client has to send its whole request (line and headers).
REQUEST_TIMEOUT_S = 10.0
#: ``--client-timeout``: seconds without a byte in, or without progress on the answer.
CLIENT_TIMEOUT_S = 30.0
#: Requests reading the store at once; others wait up to STORE_WAIT_S for a turn.
STORE_READERS = 4
STORE_WAIT_S = 10.0
#: File descriptors one open store may take (SQLite: database, -wal, -shm; one to spare).
FDS_PER_STORE = 4
#: File descriptors kept for the process itself (stdio, the listening socket, Python's own,
#: connections being closed) besides the store readers'.
RESERVED_FDS = 24
#: Open connections at most, whatever the open-file limit (a thread each).
MAX_CONNECTIONS = 256
#: Connections beyond the cap while the ones they displaced are being closed.
EVICTION_SLACK = 8
#: Events a replay stream reads per page (each page in its own short read).
REPLAY_PAGE = 2000
#: Bytes per write of an answer: "no progress for --client-timeout" is measured on these.
SEND_SLICE = 64 * 1024

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



def metrics_text(store, observer: str | None = None, now: int | None = None,
                 exclude: tuple = (), spool_dir: str | None = None) -> bytes:
    """The exposition of a store (``membership metrics`` and ``GET /metrics``). On a node
    store the view is the node's own, so it is named by the node (``observer`` label of
    ``membership_observer_info``) unless ``observer`` says otherwise; ``spool_dir`` is its
    spool (``membership_spool_files``)."""
    from ..history import api as history

    snapshot = history.metrics(store, observer, now, exclude=exclude, spool_dir=spool_dir)
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
    --observer``); ``?observer=`` overrides it. ``on_store_error`` hears each 503's reason.
    ``spool_dir``: the node store's spool, counted in /metrics."""

    def __init__(self, db_url: str, observer: str | None = None,
                 clock: Callable[[], int] = now_us,
                 on_store_error: Callable[[StoreError | None], None] | None = None,
                 readers: int = STORE_READERS, wait_s: float = STORE_WAIT_S,
                 stale_after_s: float = STALE_AFTER_S, spool_dir: str | None = None) -> None:
        self.db_url, self.observer, self.clock = db_url, observer, clock
        self.stale_after_s = stale_after_s
        self.spool_dir = spool_dir
        self.on_store_error = on_store_error or (lambda e: None)
        self._page: bytes | None = None
        self.readers, self.wait_s = readers, wait_s
        self._turns = threading.BoundedSemaphore(readers)

    def _open(self):
        from ..history import api as history

        return history.open_store(self.db_url)

    @contextmanager
    def _reading(self) -> Iterator:
        """The store, open, for one of at most ``readers`` requests at once (so the file
        descriptors it needs are always there); a StoreError (503) after ``wait_s``."""
        if not self._turns.acquire(timeout=self.wait_s):
            raise StoreError(f"{self.readers} requests are reading the store already; try "
                             f"again")
        try:
            with self._open() as store:
                yield store
        finally:
            self._turns.release()

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
        with self._reading() as store:
            body = metrics_text(store, self._view(params), spool_dir=self.spool_dir)
        return Response(200, exposition.CONTENT_TYPE, body)

    def _api_heads(self, params) -> Response:
        from ..core.timespec import iso
        from ..history import api as history

        with self._reading() as store:
            logs, last = history.freshness(store)
            doc = {"role": store.role, "heads": {o: h for o, (h, _) in logs.items()},
                   "logs": {o: {"head": h, "at": iso(t) if t is not None else None}
                            for o, (h, t) in logs.items()},
                   "observers": {obs: iso(t) for obs, t in sorted(last.items())},
                   "now": iso(self.clock()), "stale_after_s": self.stale_after_s}
        return Response(200, JSON, jsondoc.encode(doc).encode("ascii"))

    def _api_state(self, params) -> Response:
        from ..history import api as history

        at = self._time(params, "at")
        with self._reading() as store:
            now = history.state_at(store, at, self._view(params))
        return Response(200, JSON, jsondoc.encode(jsondoc.state_doc(now)).encode("ascii"))

    def _api_audit(self, params) -> Response:
        from ..history import api as history

        since, until = self._time(params, "since"), self._time(params, "until")
        with self._reading() as store:
            doc = history.audit(store, since, until, params.get("node"), self._view(params),
                                now=self.clock(), clip=True)
        return Response(200, JSON, jsondoc.audit_text(doc).encode("ascii"))

    def _api_timeline_svg(self, params) -> Response:
        from ..history import api as history

        since, until = self._time(params, "since"), self._time(params, "until")
        with self._reading() as store:
            svg = timeline.picture(history.audit(store, since, until, params.get("node"),
                                                 self._view(params), now=self.clock(),
                                                 clip=True))
        return Response(200, SVG, svg.encode("utf-8"), {"Content-Security-Policy": SVG_CSP})

    def _api_replay(self, params) -> Response:
        """Streamed: the first record is read before answering (so a bad window is a 400,
        not a broken 200), the rest as the client takes them, a page at a time (see the
        module docstring): no store is open while the stream waits on the client."""
        from ..history import api as history

        since, until = self._time(params, "since"), self._time(params, "until")
        paged = _PagedStore(self)
        try:
            records = history.replay(paged, since, until, params.get("node"),  # type: ignore[arg-type]  # forwards to a Store
                                     self._view(params))
            first = next(records, None)
        except BaseException:
            paged.release()
            raise
        paged.release()
        return Response(200, JSON_LINES, self._stream(first, records))

    @staticmethod
    def _stream(first, records) -> Iterator[bytes]:
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
            records.close()


class _PagedStore:
    """The store as :func:`membership_log.history.api.replay` reads it for a stream.

    The replay begins on a store held open (the checkpoint, the first page, the first
    record), then :meth:`release` closes it; from there on it reads only events, and
    :meth:`events` fetches them a page at a time, keyset by seq, each page whole in a store
    opened for it and closed before a single record of it goes to the client. Between pages
    nothing is open: the replay's generator keeps the fold's state, not a cursor.
    """

    def __init__(self, api: Api) -> None:
        self._api = api
        self._held = api._reading()
        self._store = self._held.__enter__()

    def __getattr__(self, name: str):
        store = self.__dict__.get("_store")
        if store is None:  # a replay reads nothing but events once it has begun
            raise AttributeError(f"{name}: the stream's store is closed")
        return getattr(store, name)

    def release(self) -> None:
        if self._store is not None:
            self._store = None
            self._held.__exit__(None, None, None)

    def _page(self, origin: str, after: int, until: int) -> list:
        if self._store is not None:
            return list(self._store.events(origin, after, until))
        with self._api._reading() as store:
            return list(store.events(origin, after, until))

    def events(self, origin: str, after: int = 0, until: int | None = None) -> Iterator:
        end = until
        if end is None:  # the head when the stream begins: the command's snapshot
            end = self._store.head_seq(origin)
        while after < end:
            hi = min(after + REPLAY_PAGE, end)
            yield from self._page(origin, after, hi)
            after = hi


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
    timeout = CLIENT_TIMEOUT_S  # each read and each SEND_SLICE write (StreamRequestHandler)
    api: Api
    allowed_hosts: frozenset[str] | None
    log_error_line: Callable[[str], None]
    server: _Server

    def handle(self) -> None:
        try:
            super().handle()
        except OSError:
            pass  # the client hung up (or was cut off) mid-request: nothing to tell

    def do_GET(self) -> None:  # noqa: N802 -- http.server's naming
        self.close_connection = True
        if not self.server.begin(self.request):
            return  # too slow, or displaced at the cap: already answered and cut off
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
        body = response.body
        try:
            self._write(response)
        except TimeoutError:
            self.log_error_line(f"GET {render.printable(self.path[:200])}: the client took "
                                f"nothing of the answer for {self.timeout:g} s; dropped")
        except OSError:
            pass  # the client hung up (a scrape timeout, a closed tab): not news
        except Exception as e:  # noqa: BLE001 -- the 200 is sent: cut the stream short
            self.log_error_line(f"GET {render.printable(self.path[:200])}: stream cut: "
                                f"{type(e).__name__}: {render.printable(str(e))}")
        finally:
            close = getattr(body, "close", None)
            if close is not None:
                close()  # a stream's generator: it closes what it opened

    def _write(self, response: Response) -> None:
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
            self._slices(body)
            return
        self.end_headers()  # HTTP/1.0: the stream ends when the connection closes
        for chunk in body:
            self._slices(chunk)

    def _slices(self, data: bytes) -> None:
        view = memoryview(data)
        for i in range(0, len(view), SEND_SLICE):
            self.wfile.write(view[i:i + SEND_SLICE])

    def log_message(self, format: str, *args) -> None:  # noqa: A002
        pass  # a scrape every 15 s is not news; errors are logged where they happen


def connection_cap() -> tuple[int, int | None]:
    """How many connections may be open now, and the open-file limit it was derived from
    (None: unlimited). Read at each connection: ``prlimit`` can change it while we run."""
    soft = resource.getrlimit(resource.RLIMIT_NOFILE)[0]
    if soft == resource.RLIM_INFINITY:
        return MAX_CONNECTIONS, None
    spare = soft - RESERVED_FDS - STORE_READERS * FDS_PER_STORE
    return max(1, min(MAX_CONNECTIONS, spare)), soft


def _answer_now(sock: socket.socket, status: str, message: str) -> None:
    """A whole one-line answer, without blocking (the client may read nothing)."""
    body = (message + "\n").encode()
    head = (f"HTTP/1.0 {status}\r\nContent-Type: {TEXT}\r\nContent-Length: {len(body)}\r\n"
            f"Connection: close\r\n\r\n").encode()
    try:
        sock.send(head + body, socket.MSG_DONTWAIT)
    except OSError:
        pass


@dataclass
class _Conn:
    accepted: float
    pending: bool = True   # its request has not arrived whole yet
    cut: bool = False      # answered and shut down by the server (too slow, displaced)


class _Server(ThreadingHTTPServer):
    """Counts its connections: a cap (:func:`connection_cap`), the request deadline (checked
    by the serving loop every half second), and one log line per spell at the cap."""

    daemon_threads = True
    block_on_close = False  # a stop must not wait for a long replay stream to finish
    request_queue_size = 128

    def __init__(self, address, handler, log: Callable[[str], None],
                 request_timeout: float) -> None:
        self.log_line, self.request_timeout = log, request_timeout
        self._conns: dict[socket.socket, _Conn] = {}
        self._lock = threading.Lock()
        self.at_cap = Outage(
            log, time.monotonic,
            began="connection cap reached: {error}; the connection waiting longest for its "
                  "request is closed for each new one, or the new one answered 503 (reported "
                  "again once under the cap)",
            ended="under the connection cap again after {lasted} ({failures} connection(s) "
                  "closed or refused)")
        super().__init__(address, handler)

    def _cut(self, sock: socket.socket, status: str, message: str) -> None:
        """Answer a connection still sending its request, and shut it (its thread, woken,
        closes it). Under the lock."""
        self._conns[sock].cut = True
        _answer_now(sock, status, message)
        try:
            sock.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass

    def process_request(self, request, client_address) -> None:
        cap, limit = connection_cap()
        now = time.monotonic()
        with self._lock:
            open_ = len(self._conns)
            admit = open_ < cap
            if not admit and open_ < cap + EVICTION_SLACK:
                waiting = [(c.accepted, i) for i, c in enumerate(self._conns.values())
                           if c.pending and not c.cut]
                if waiting:
                    victim = list(self._conns)[min(waiting)[1]]
                    self._cut(victim, "503 Service Unavailable", "too many connections: "
                              "this one waited longest for its request; try again")
                    admit = True
            if admit:
                self._conns[request] = _Conn(now)
        if open_ < cap * 3 // 4:
            # A spell at the cap ends once clearly under it: a server hovering at the cap
            # (evicting and admitting) says so once, not at every connection.
            self.at_cap.succeeded()
        elif open_ >= cap:
            self.at_cap.failed(f"{open_} connections open, the most for an open-file limit "
                               f"of {limit}" if limit else f"{open_} connections open")
        if not admit:
            _answer_now(request, "503 Service Unavailable",
                        "too many connections: try again")
            super().shutdown_request(request)
            return
        super().process_request(request, client_address)

    def begin(self, sock: socket.socket) -> bool:
        """The request has arrived whole: False if the server has cut it off already."""
        with self._lock:
            conn = self._conns.get(sock)
            if conn is None or conn.cut:
                return False
            conn.pending = False
            return True

    def service_actions(self) -> None:
        """Called by serve_forever between polls: cut off requests past their deadline, and
        end a spell at the cap once the connections have gone (no new one need arrive)."""
        now = time.monotonic()
        with self._lock:
            late = [s for s, c in self._conns.items()
                    if c.pending and not c.cut and now - c.accepted > self.request_timeout]
            for sock in late:
                self._cut(sock, "408 Request Timeout", f"the request did not arrive within "
                          f"{self.request_timeout:g} s")
            open_ = len(self._conns)
        if open_ < connection_cap()[0] * 3 // 4:
            self.at_cap.succeeded()

    def shutdown_request(self, request) -> None:
        with self._lock:
            self._conns.pop(request, None)
        super().shutdown_request(request)

    def handle_error(self, request, client_address) -> None:
        """One line, never a traceback; nothing at all for a client that hung up."""
        error = sys.exc_info()[1]
        if isinstance(error, OSError):
            return
        self.log_line(f"internal error answering a request: {type(error).__name__}: "
                      f"{render.printable(str(error))[:300]}")


def make_server(api: Api, host: str, port: int,
                log: Callable[[str], None] = lambda line: None,
                client_timeout: float = CLIENT_TIMEOUT_S) -> ThreadingHTTPServer:
    """A server for ``api`` bound to ``host:port`` (port 0: any free one)."""
    allowed = frozenset({host.lower(), "localhost"}) if _loopback(host) else None
    handler = type("Handler", (_Handler,), {"api": api, "allowed_hosts": allowed,
                                            "log_error_line": staticmethod(log),
                                            "timeout": client_timeout})
    server_class: type = _Server  # type() below makes a subclass mypy can only call "type"
    if ":" in host:
        server_class = type("Server6", (_Server,), {"address_family": socket.AF_INET6})
    try:
        return server_class((host, port), handler, log,
                            min(REQUEST_TIMEOUT_S, client_timeout))
    except OSError as e:
        raise MembershipError(f"cannot listen on {host}:{port}: {e.strerror or e}") from None


def store_outage(log: Callable[[str], None]) -> Callable[[StoreError | None], None]:
    """``Api.on_store_error`` for serve: one line when the 503s begin, one when they end."""
    outage = Outage(log, time.monotonic,
                    began="answering 503: {error} (reported again once the store is "
                          "readable)",
                    ended="the store is readable again after {lasted} ({failures} failed "
                          "reads)")

    def heard(error: StoreError | None) -> None:
        if error is None:
            outage.succeeded()
        else:
            outage.failed(render.printable(str(error)))
    return heard


def serve(db_url: str, listen: str = DEFAULT_LISTEN, observer: str | None = None,
          log: Callable[[str], None] | None = None,
          ready: Callable[[ThreadingHTTPServer], None] | None = None,
          client_timeout: float = CLIENT_TIMEOUT_S,
          stale_after_s: float = STALE_AFTER_S, spool_dir: str | None = None) -> None:
    """Serve until interrupted (KeyboardInterrupt; the CLI turns SIGTERM into one)."""
    if log is None:
        def log(line: str) -> None:
            sys.stderr.write(f"membership serve: {line}\n")
            sys.stderr.flush()
    host, port = parse_listen(listen)
    api = Api(db_url, observer, on_store_error=store_outage(log), stale_after_s=stale_after_s,
              spool_dir=spool_dir)
    server = make_server(api, host, port, log, client_timeout)
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
