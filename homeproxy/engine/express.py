"""The express lane: the common request (bodiless, to a site that forwards as it is) answered
from callbacks, without a task or the chain's coroutines.

Most of a home lab's traffic is GETs to sites with no feature on. For those, the lane does what
`RequestHandler.handle` and the `Forwarder` would do, with the same pieces (the same request
head, the same reply head, the same event), but as two callbacks: the client's request goes out
on an idle pooled connection at once, and the upstream's answer is written back from the read
that completed it. Anything else leaves the lane, always before a byte has gone to the client:

- before the lane takes a request (`take` returns False): a body, an upgrade, a method other
  than GET or HEAD, a `Via` (a loop), a `Range` (the ranges guard), `Expect`, a path in an
  unusual spelling, an ACME challenge, a site with a feature on, its own error pages, TLS
  redirects or the `cookie` policy. The request takes the ordinary path from the start;
- after it picked the upstreams (`Forwarder.candidates`, which moves the balancer on): no idle
  connection to the first, an mDNS upstream or one at its `max_conns`. The ordinary path goes on
  from those candidates (`Forwarder.resume`), so the policy's order is kept;
- after the request went out: the upstream failed before its head (closed, reset, malformed,
  timed out) — the ordinary path goes on with that error, which decides about a retry as it
  would have — or the head came without the whole body (a large or streamed answer), which the
  ordinary path streams from there (`upstream_exchange._reply`).

`tests/engine/test_express.py` sends the same requests through both paths and compares what
the upstream and the client receive, byte for byte.
"""

from __future__ import annotations

import logging
import math
import os
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from homeproxy.engine.exchange import Exchange
from homeproxy.engine.h1.client_limits import write_error
from homeproxy.engine.h1.connection import DATE, OVERRUN, SERVER, H1Connection, Response
from homeproxy.engine.h1.errors import UpstreamProtocolError
from homeproxy.engine.health import UpstreamHealth
from homeproxy.engine.pages import error_reply
from homeproxy.engine.paths import is_plain
from homeproxy.engine.reply import NO_BODY_STATUS, Reply, date_line, reason_phrase, send_whole
from homeproxy.engine.request import Request
from homeproxy.engine.routing import normalize_host
from homeproxy.engine.tls_paths import WELL_KNOWN
from homeproxy.engine.upstream_exchange import GATEWAY_TROUBLE, SMALL_BODY, _reply, failed
from homeproxy.engine.upstream_head import head

if TYPE_CHECKING:
    from homeproxy.engine.h1.pool import Origin
    from homeproxy.engine.h1.server import HttpServer
    from homeproxy.engine.handling import RequestHandler
    from homeproxy.engine.upstream import Forwarder

log = logging.getLogger(__name__)

ENABLED = os.environ.get("HOMEPROXY_EXPRESS", "1") != "0"
"""`HOMEPROXY_EXPRESS=0` sends every request the ordinary way (to compare, or to rule the lane out)."""

SWEPT_AFTER = 5.0
"""Seconds: a `header_timeout` longer than this is checked by the server's sweep, not a timer."""
_METHODS = frozenset({"GET", "HEAD"})
#: Request headers that some part of the ordinary path acts on: such a request takes it.
_OTHERS = ("Via", "Range", "Request-Range", "Expect")


class ExpressLane:
    """Takes the requests it can answer from callbacks (`take`)."""

    def __init__(self, handler: RequestHandler, server: HttpServer) -> None:
        self.handler = handler
        self.server = server

    def take(self, request: Request) -> bool:
        """Answer `request` on the express lane, or hand it to the ordinary path from where the
        lane stopped; False: not the lane's, the ordinary path takes it from the start."""
        if request.method not in _METHODS or request.body_exists or request.upgrade:
            return False
        headers = request.headers
        for name in _OTHERS:
            if name in headers:
                return False
        secure = request.secure
        if not secure and request.raw_path.startswith(WELL_KNOWN):
            return False
        handler = self.handler
        host = normalize_host(headers.get("Host", ""))
        compiled = handler.table.lookup(host)
        if compiled is None or compiled.error_pages or compiled.site.tls != secure:
            return False
        path = request.path
        if not is_plain(path) or not path.startswith("/"):
            return False
        forwarder = compiled.route_for(path).express
        if forwarder is None:
            return False
        started = time.monotonic()
        ex = handler.exchange_for(request, host)
        ex.site = compiled.site.name
        self.server.express_began()
        call: Call | None = None
        upstream_head = b""
        conn = None
        try:
            order = forwarder.candidates(ex)
            if order:
                i = order[0]
                health = forwarder.health[i]
                fixed = forwarder.fixed_origin(i)
                if fixed is not None and not health.full():
                    origin, base_path = fixed
                    conn = forwarder.client.pool.take(origin)
                    if conn is not None:
                        ex.upstream = forwarder._names[i]
                        base = forwarder.upstreams[i]
                        upstream_head = head(forwarder, ex, base, base_path, [])  # type: ignore[arg-type]
                        call = Call(self, ex, started, forwarder, order, origin, health, conn)
        except Exception as e:  # never a stack trace to the client (as RequestHandler.complete)
            log.exception("error handling %s %s", request.method, request.raw_path)
            if conn is not None:
                conn.close()  # taken from the pool, never used
            ex.error = f"internal error: {type(e).__name__}"
            self.finish(ex, started, error_reply(502, request))
            return True
        if call is not None:
            call.send(upstream_head)
        else:
            self.resume(ex, started, forwarder, order, None)
        return True

    def resume(
        self, ex: Exchange, started: float, forwarder: Forwarder, order: list[int], raised: BaseException | None
    ) -> None:
        """The ordinary path goes on from the candidates the lane picked."""
        if not order:  # every upstream is down: answered here, as the Forwarder would
            self.finish(ex, started, forwarder._all_down(ex))
            return
        request = ex.request
        answer = forwarder.resume(ex, order, raised, since=started)
        request.conn.run(request, self.handler.complete(ex, started, answer))
        # Counted out only once its task counts: a drain must never see nothing in flight between.
        self.server.express_ended()

    def finish_raw(self, ex: Exchange, started: float, response: Response, body: bytes, no_body: bool) -> None:
        """`finish`, writing the upstream's head as it came (`_write_raw`)."""
        self._end(ex, started, _write_raw, ex, response, body, no_body)

    def finish(self, ex: Exchange, started: float, reply: Reply) -> None:
        """Write `reply` (its body in hand), publish the event, and go on with the connection."""
        self._end(ex, started, send_whole, ex, reply)

    def _end(self, ex: Exchange, started: float, write: Callable[..., None], *args: Any) -> None:
        """`write(*args)` the answer, then publish the event and go on with the connection, whatever
        happened: an exception is what ClientConnection._run makes of a handler's (a 500 page if
        nothing was sent yet, and the connection closes after)."""
        request = ex.request
        conn = request.conn
        try:
            write(*args)
        except Exception:
            log.exception("error handling %s %s", request.method, request.raw_path)
            if not conn.response_started and conn.transport is not None:
                write_error(conn, 500)
            conn.must_close = True
        finally:
            self.server.express_ended()
            self.handler.publish(ex, started)
            conn.finished(request)


def _write_raw(ex: Exchange, response: Response, body: bytes, no_body: bool) -> None:
    """Write the upstream's head as it came, with what `reply._head` adds (the same bytes:
    `_as_sent` said so), without decoding it into a `Reply`'s headers; as `send_whole`."""
    request = ex.request
    conn = request.conn
    status = response.status
    reason = response.reason_raw or reason_phrase(status).encode("latin-1")
    lines = [b"HTTP/1.1 %d %s\r\n" % (status, reason)]
    lines += [b"%s: %s\r\n" % item for item in response.raw]
    marks = response.marks
    if not marks & SERVER:
        lines.append(_SERVER)
    if not marks & DATE:
        lines.append(date_line())
    if not conn.keeps_alive(request):
        lines.append(b"Connection: close\r\n")
        conn.must_close = True
    elif request.version != "1.1":
        lines.append(b"Connection: keep-alive\r\n")
    lines.append(b"\r\n")
    ex.status = status
    ex.bytes_out = 0
    if body and not no_body:
        ex.bytes_out = len(body)
        lines.append(body)
    try:
        conn.write(b"".join(lines))
    except ConnectionError:  # `write` raises it only for a connection closed or closing
        ex.error = "client went away"


def _as_sent(response: Response, no_body: bool) -> bool:
    """May the upstream's head go to the client as it came (`ExpressLane.finish_raw`)? Only when
    what `reply._head` would write is the same: one Content-Length, written as `%d` writes it
    (it is replaced by the body's length), or none for a body-less answer but a 204's."""
    if no_body:
        return not (response.status == 204 and response.lengths)
    length = response.content_length
    return length is not None and response.lengths == 1 and response.length_raw == b"%d" % length


_SERVER = b"Server: homeproxy\r\n"


class Call:
    """One request out on the express lane: waits for the upstream's answer by callback."""

    __slots__ = (
        "conn",
        "deadline",
        "ended",
        "ex",
        "forwarder",
        "health",
        "lane",
        "order",
        "origin",
        "released",
        "started",
        "timer",
    )

    def __init__(
        self,
        lane: ExpressLane,
        ex: Exchange,
        started: float,
        forwarder: Forwarder,
        order: list[int],
        origin: Origin,
        health: UpstreamHealth,
        conn: H1Connection,
    ) -> None:
        self.lane = lane
        self.ex = ex
        self.started = started
        self.forwarder = forwarder
        self.order = order
        self.origin = origin
        self.health = health
        self.conn = conn
        self.timer: object = None
        self.deadline = math.inf
        self.released = False
        """The upstream connection and the in-flight counts were given back."""
        self.ended = False
        """The request was handed on (answered, or given to the ordinary path)."""

    def send(self, upstream_head: bytes) -> None:
        conn = self.conn
        site = self.forwarder.site
        self.health.in_flight += 1
        self.origin.in_flight += 1
        try:
            conn.send(upstream_head, None, head_only=self.ex.request.method == "HEAD")
        except Exception as e:  # the pooled connection was found closed: nothing went out
            self._failed(e)
            return
        conn.notify = self._answered
        self.lane.server.waiting.add(self)
        timeout = site.header_timeout or site.read_timeout
        if timeout is not None:
            if timeout <= SWEPT_AFTER:
                self.timer = conn.loop.call_later(timeout, conn.head_timed_out)
            else:  # a long one: the server's sweep (once a second) saves a timer per request
                self.deadline = conn.loop.time() + timeout

    def check(self, now: float) -> None:
        """The server's sweep: has the head's time run out?"""
        if now >= self.deadline:
            self.conn.head_timed_out()

    def _release(self, complete: bool) -> None:
        self.released = True
        self.origin.in_flight -= 1
        self.health.done()
        if complete:
            self.forwarder.client.pool.release(self.origin, self.conn)
        else:
            self.conn.abort()

    def _failed(self, error: BaseException) -> None:
        """Nothing came back: the ordinary path decides what the error means (a retry, a 502, a 504)."""
        self._release(False)
        self.ended = True
        self.lane.resume(self.ex, self.started, self.forwarder, self.order, error)

    def cut(self) -> None:
        """The engine stops and the drain time is over: as a cancelled task on the ordinary path,
        the upstream connection is aborted and the event says what was known."""
        self._stop_waiting()
        conn = self.conn
        conn.notify = None
        head = conn._head
        if head is not None and not head.done():
            head.cancel()  # nobody will read what the abort sets on it
        self._release(False)
        self.ended = True
        lane = self.lane
        lane.server.express_ended()
        lane.handler.publish(self.ex, self.started)
        self.ex.request.conn.finished(self.ex.request)

    def _stop_waiting(self) -> None:
        self.lane.server.waiting.discard(self)
        timer = self.timer
        if timer is not None:
            timer.cancel()  # type: ignore[attr-defined]

    def _answered(self) -> None:
        """The head came (or an error in its place), in the read that has just been parsed."""
        try:
            self._answer()
        except Exception as e:  # a bug must not leave the client waiting for ever
            self._broke(e)

    def _broke(self, error: Exception) -> None:
        """What `RequestHandler.complete` does for an exception: logged, a 502 page if nothing
        was sent yet, else the client's connection cut; the event says so."""
        ex = self.ex
        request = ex.request
        log.error("express lane: error answering %s %s", request.method, request.raw_path, exc_info=error)
        if not self.released:
            self._release(False)
        if self.ended:
            return  # handed on already: whoever has it answers
        self.ended = True
        ex.error = f"internal error: {type(error).__name__}"
        if not request.conn.response_started:
            self.lane.finish(ex, self.started, error_reply(502, request))
            return
        request.conn.abort()
        lane = self.lane
        lane.server.express_ended()
        lane.handler.publish(ex, self.started)
        request.conn.finished(request)

    def _answer(self) -> None:
        self._stop_waiting()
        conn = self.conn
        head = conn._head
        assert head is not None
        error = head.exception()
        if error is not None:
            self._failed(error)
            return
        response: Response = head.result()
        ex = self.ex
        site = self.forwarder.site
        if response.status in GATEWAY_TROUBLE and site.passive_health.status_5xx:
            self.health.failed(f"status {response.status}")
        status = response.status
        no_body = ex.request.method == "HEAD" or status in NO_BODY_STATUS
        length = response.content_length
        if no_body or (response.complete and length is not None and length <= SMALL_BODY):
            body = b""
            if not no_body:
                in_hand = response.in_hand()
                if in_hand is None:  # more bytes than the length said: not trusted (as `Response.read`)
                    self._release(False)
                    self.ended = True
                    self.lane.finish(ex, self.started, failed(ex, UpstreamProtocolError(OVERRUN)))
                    return
                body = in_hand
            self._release(True)
            lane = self.lane
            if lane.handler.bus.wants_headers or not _as_sent(response, no_body):
                reply = Reply(status, response.headers, body, reason=response.reason)
                self.ended = True  # from here `finish` answers, whatever happens
                lane.finish(ex, self.started, reply)
            else:
                self.ended = True
                lane.finish_raw(ex, self.started, response, body, no_body)
            return
        # A large or streamed answer, or a small one still on its way: the ordinary path reads it.
        self.released = self.ended = True  # `_reply` releases the connection and counts from here
        lane = self.lane
        request = ex.request
        pool = self.forwarder.client.pool
        answer = _reply(pool, site, ex, self.origin, self.health, conn, response, None)
        request.conn.run(request, lane.handler.complete(ex, self.started, _paired(answer)))
        lane.server.express_ended()  # after its task counts (see `ExpressLane.resume`)


async def _paired(answer: object) -> tuple[Reply, None]:
    return await answer, None  # type: ignore[misc]


__all__ = ["ENABLED", "ExpressLane"]
