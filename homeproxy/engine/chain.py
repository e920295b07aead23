"""The per-site handler chain.

A request flows *down* the chain and its response flows back *up*: each
middleware gets the `Exchange` and the next handler, and may answer itself,
change the request, or change the response the rest of the chain returns.

The one order, outermost first (features land in `engine/features/`, each a
`make_<x>(settings) -> Middleware` that is built once per `apply()`, never per
request, and only when the site turns it on):

    access (allow/deny) -> auth -> rate limit -> headers -> cache -> compression -> forward

Today the chain is `forward` alone; a site with a feature off pays nothing for it.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence
from typing import Protocol

from homeproxy.engine.exchange import Exchange
from homeproxy.engine.reply import Reply

Handler = Callable[[Exchange], Awaitable[Reply]]


class Middleware(Protocol):
    """`async (exchange, next_handler) -> response`."""

    def __call__(self, exchange: Exchange, handler: Handler, /) -> Awaitable[Reply]: ...


def compose(middlewares: Sequence[Middleware], terminal: Handler) -> Handler:
    """Wrap `terminal` in `middlewares`, the first one outermost."""
    handler = terminal
    for mw in reversed(middlewares):
        handler = _bind(mw, handler)
    return handler


def _bind(mw: Middleware, nxt: Handler) -> Handler:
    async def handler(exchange: Exchange) -> Reply:
        return await mw(exchange, nxt)

    return handler
