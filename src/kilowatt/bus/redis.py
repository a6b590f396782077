"""The cluster's command bus: a CALL reaches the charge point whichever node holds it.

:meth:`RedisCommandBus.call` tries this node's registry first: a charge point
connected here is called directly, without a single Redis command. Otherwise the
presence key names the node holding the socket, and the request is published on
that node's channel, both in one Redis round trip (a script reads the key and
publishes)::

    {"t": "call", "id": "17", "from": "node-a", "cp": "CP1", "action": "Reset",
     "payload": {...}, "timeout": 30.0}

That node runs the CALL on its connection exactly as a local call would, and
publishes the outcome on the caller's channel: ``{"t": "reply", "id": "17", "ok":
true, "result": {...}}``, or ``"ok": false`` with the exception, which the caller
raises again as the very same type (NotConnected, CallTimeout, CallErrorReceived,
InvalidCallResult, OutgoingValidationError): the API answers a charge point on
another node with the same status codes as a local one. The caller waits the
call's timeout plus :data:`REPLY_GRACE` (the holder's own CallTimeout normally
comes first); a node that never answers is a CallTimeout too. Nobody subscribed
to the holder's channel (the node died, its key has not expired yet) is
NotConnected at once.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
from typing import Any, Protocol

import orjson
from redis.exceptions import RedisError

from kilowatt.bus.local import LocalCommandBus
from kilowatt.cluster.link import RedisLink
from kilowatt.cluster.presence import Presence
from kilowatt.protocol.errors import (
    CallErrorReceived,
    CallFailed,
    CallTimeout,
    NotConnected,
    OutgoingValidationError,
    call_error_for,
)
from kilowatt.protocol.session import InvalidCallResult

__all__ = [
    "REPLY_GRACE",
    "RedisCommandBus",
    "RemoteCallFailed",
    "decode_error",
    "encode_error",
    "node_channel",
]

log = logging.getLogger("kilowatt.cluster")

REPLY_GRACE = 2.0
"""Seconds a caller waits beyond the call's timeout for the holder's answer."""

# KEYS[1] the presence key; ARGV: channel prefix, request, this node's id.
# Returns nil (nobody holds it), or {holder, receivers}, receivers -1 when the
# holder is this very node (a key outliving its connection for a moment).
_ROUTE = """
local value = redis.call('GET', KEYS[1])
if not value then
    return false
end
local node = string.match(value, '^(%S+)')
if node == ARGV[3] then
    return {node, -1}
end
return {node, redis.call('PUBLISH', ARGV[1] .. node, ARGV[2])}
"""


class RemoteCallFailed(CallFailed):
    """The node holding the charge point failed the call in an unexpected way."""


class _Connection(Protocol):
    async def call(
        self, action: str, payload: dict[str, Any], *, timeout: float | None = None
    ) -> dict[str, Any]: ...


class _Registry(Protocol):
    def get(self, charge_point_id: str) -> Any: ...


def node_channel(link: RedisLink, node_id: str) -> str:
    """The channel a node receives requests, replies and control messages on."""
    return link.key("to", node_id)


def encode_error(exc: BaseException) -> dict[str, Any]:
    """An exception of a CALL as JSON, for :func:`decode_error` on another node."""
    if isinstance(exc, CallErrorReceived):
        return {
            "kind": "call_error",
            "code": exc.code,
            "description": exc.description,
            "details": exc.details,
        }
    if isinstance(exc, InvalidCallResult):
        error = exc.error
        return {
            "kind": "invalid_result",
            "code": str(error.code),
            "description": error.description,
            "details": error.details,
        }
    if isinstance(exc, OutgoingValidationError):
        error = exc.error
        return {
            "kind": "outgoing_invalid",
            "action": exc.action,
            "code": str(error.code),
            "description": error.description,
            "details": error.details,
        }
    if isinstance(exc, CallTimeout):
        return {"kind": "timeout", "message": str(exc)}
    if isinstance(exc, NotConnected):
        return {"kind": "not_connected", "message": str(exc)}
    return {"kind": "failed", "message": f"{type(exc).__name__}: {exc}"}


def decode_error(error: dict[str, Any]) -> Exception:
    """The exception :func:`encode_error` described, of the same type."""
    kind = error.get("kind")
    if kind == "call_error":
        return CallErrorReceived(
            str(error.get("code", "")), str(error.get("description", "")), error.get("details")
        )
    if kind == "invalid_result":
        return InvalidCallResult(
            call_error_for(
                str(error.get("code", "")),
                str(error.get("description", "")),
                error.get("details") or {},
            )
        )
    if kind == "outgoing_invalid":
        return OutgoingValidationError(
            str(error.get("action", "")),
            call_error_for(
                str(error.get("code", "")),
                str(error.get("description", "")),
                error.get("details") or {},
            ),
        )
    message = str(error.get("message", ""))
    if kind == "timeout":
        return CallTimeout(message)
    if kind == "not_connected":
        return NotConnected(message)
    return RemoteCallFailed(message or "the node holding the charge point failed the call")


class RedisCommandBus:
    """A :class:`kilowatt.bus.base.CommandBus` across the nodes of a cluster."""

    def __init__(
        self,
        registry: _Registry,
        link: RedisLink,
        presence: Presence,
        *,
        default_timeout: float,
        reply_grace: float = REPLY_GRACE,
    ) -> None:
        self._registry = registry
        self._local = LocalCommandBus(registry)
        self._link = link
        self._presence = presence
        self.node_id = presence.node_id
        self.default_timeout = default_timeout
        self.reply_grace = reply_grace
        self._route = link.client.register_script(_ROUTE)
        self._ids = itertools.count(1)
        self._pending: dict[str, asyncio.Future[dict[str, Any]]] = {}
        self._serving: set[asyncio.Task[None]] = set()
        self._closed = False
        # Counters, for logs and tests.
        self.local_calls = 0
        self.remote_calls = 0
        self.served_calls = 0

    # -------------------------------------------------------------- caller

    async def call(
        self,
        charge_point_id: str,
        action: str,
        payload: dict[str, Any],
        *,
        timeout: float | None = None,
    ) -> dict[str, Any]:
        if self._registry.get(charge_point_id) is not None:
            self.local_calls += 1
            return await self._local.call(charge_point_id, action, payload, timeout=timeout)
        request_id = str(next(self._ids))
        effective = self.default_timeout if timeout is None else timeout
        request = orjson.dumps(
            {
                "t": "call",
                "id": request_id,
                "from": self.node_id,
                "cp": charge_point_id,
                "action": action,
                "payload": payload,
                "timeout": effective,
            }
        )
        # Waiting before the request leaves: the answer can come back at once.
        future: asyncio.Future[dict[str, Any]] = asyncio.get_running_loop().create_future()
        self._pending[request_id] = future
        try:
            holder = await self._send(charge_point_id, request)
            self.remote_calls += 1
            wait = effective + self.reply_grace
            try:
                async with asyncio.timeout(wait):
                    reply = await future
            except TimeoutError:
                raise CallTimeout(
                    f"no answer from node {holder} (holding charge point {charge_point_id!r}) "
                    f"within {wait:g} s"
                ) from None
        finally:
            self._pending.pop(request_id, None)
        if reply.get("ok"):
            result: dict[str, Any] = reply.get("result") or {}
            return result
        raise decode_error(reply.get("error") or {})

    async def _send(self, charge_point_id: str, request: bytes) -> str:
        """Publish ``request`` to the holder's channel; return the holder's node id."""
        try:
            routed = await self._route(
                keys=[self._presence.key(charge_point_id)],
                args=[node_channel(self._link, ""), request, self.node_id],
            )
        except (RedisError, OSError) as exc:
            raise NotConnected(
                f"charge point {charge_point_id!r} is not connected to this node, and the "
                f"cluster's Redis cannot be asked where it is ({type(exc).__name__})"
            ) from None
        if not routed or int(routed[1]) < 0:
            raise NotConnected(f"charge point {charge_point_id!r} is not connected")
        holder = routed[0].decode() if isinstance(routed[0], bytes) else str(routed[0])
        if int(routed[1]) == 0:
            raise NotConnected(
                f"charge point {charge_point_id!r} was held by node {holder}, which is gone"
            )
        return holder

    async def _holder(self, charge_point_id: str) -> str | None:
        """The node holding the charge point, unless it is this one or none."""
        try:
            holder = await self._presence.holder(charge_point_id)
        except (RedisError, OSError) as exc:
            raise NotConnected(
                f"charge point {charge_point_id!r} is not connected to this node, and the "
                f"cluster's Redis cannot be asked where it is ({type(exc).__name__})"
            ) from None
        if holder is None or holder.node_id == self.node_id:
            # Our own key without a local connection: it has just gone.
            return None
        return holder.node_id

    async def is_connected(self, charge_point_id: str) -> bool:
        if self._registry.get(charge_point_id) is not None:
            return True
        try:
            return await self._holder(charge_point_id) is not None
        except NotConnected:
            return False

    def handle_reply(self, message: dict[str, Any]) -> None:
        future = self._pending.get(str(message.get("id")))
        if future is not None and not future.done():
            future.set_result(message)

    # -------------------------------------------------------------- holder

    def handle_request(self, message: dict[str, Any]) -> None:
        """A call for a charge point of ours, from another node: run it, reply."""
        if self._closed:
            return
        task = asyncio.get_running_loop().create_task(self._serve(message))
        self._serving.add(task)
        task.add_done_callback(self._serving.discard)

    async def _serve(self, message: dict[str, Any]) -> None:
        charge_point_id = str(message.get("cp"))
        reply_to = str(message.get("from"))
        reply: dict[str, Any] = {"t": "reply", "id": message.get("id")}
        try:
            connection: _Connection | None = self._registry.get(charge_point_id)
            if connection is None:
                raise NotConnected(f"charge point {charge_point_id!r} is not connected")
            timeout = message.get("timeout")
            self.served_calls += 1
            reply["result"] = await connection.call(
                str(message.get("action")),
                message.get("payload") or {},
                timeout=float(timeout) if timeout is not None else None,
            )
            reply["ok"] = True
        except asyncio.CancelledError:
            reply.update(ok=False, error=encode_error(NotConnected("the node is shutting down")))
        except Exception as exc:
            if not isinstance(exc, CallFailed | OutgoingValidationError):
                log.exception(
                    "call for another node failed",
                    extra={"charge_point": charge_point_id, "from_node": reply_to},
                )
            reply.update(ok=False, error=encode_error(exc))
        try:
            await self._link.publish(node_channel(self._link, reply_to), orjson.dumps(reply))
        except (RedisError, OSError) as exc:
            log.warning(
                "could not send a call's answer back",
                extra={"charge_point": charge_point_id, "to_node": reply_to, "reason": repr(exc)},
            )

    async def close(self) -> None:
        """Fail the calls waiting for other nodes; stop serving theirs."""
        self._closed = True
        for future in self._pending.values():
            if not future.done():
                future.set_exception(NotConnected("this node is shutting down"))
        serving = list(self._serving)
        for task in serving:
            task.cancel()
        if serving:
            await asyncio.wait(serving, timeout=5.0)
