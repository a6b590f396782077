"""Route incoming CALLs to handlers by action: one explicit table, no magic.

An action without a handler is answered ``NotSupported`` by the session (it is known
to the protocol, just not enabled here); an action unknown to the protocol version
is answered ``NotImplemented`` (OCPP-J 1.6 §4.2.3).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Iterator, Mapping
from typing import Any, Protocol

__all__ = ["CallContext", "Handler", "Inline", "Router"]


class CallContext(Protocol):
    """What a handler knows about the CALL it is answering."""

    @property
    def charge_point_id(self) -> str: ...

    @property
    def unique_id(self) -> str: ...

    @property
    def action(self) -> str: ...


Handler = Callable[[CallContext, dict[str, Any]], Awaitable[dict[str, Any]]]


class Inline:
    """A handler that answers without waiting for anything (a Heartbeat's time).

    The connection calls ``function`` as soon as the CALL is parsed, with no task
    to create and schedule, when no earlier CALL of that charge point is still
    being handled (answers stay in order); otherwise it waits its turn like any
    handler, through ``__call__``. It must not block: no I/O, nothing to await.
    """

    __slots__ = ("function",)

    def __init__(self, function: Callable[[CallContext, dict[str, Any]], dict[str, Any]]) -> None:
        self.function = function

    async def __call__(self, ctx: CallContext, payload: dict[str, Any]) -> dict[str, Any]:
        return self.function(ctx, payload)


class Router(Mapping[str, Handler]):
    """An immutable-after-build mapping of action name to handler."""

    __slots__ = ("_routes",)

    def __init__(self, routes: Mapping[str, Handler] | None = None) -> None:
        self._routes: dict[str, Handler] = dict(routes or {})

    def __getitem__(self, action: str) -> Handler:
        return self._routes[action]

    def __contains__(self, action: object) -> bool:
        return action in self._routes

    def __iter__(self) -> Iterator[str]:
        return iter(self._routes)

    def __len__(self) -> int:
        return len(self._routes)
