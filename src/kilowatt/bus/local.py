"""The in-process command bus: the socket is always in this process."""

from __future__ import annotations

from typing import Any, Protocol

from kilowatt.protocol.errors import NotConnected

__all__ = ["LocalCommandBus"]


class _Connection(Protocol):
    async def call(
        self, action: str, payload: dict[str, Any], *, timeout: float | None = None
    ) -> dict[str, Any]: ...


class _Registry(Protocol):
    def get(self, charge_point_id: str) -> Any: ...


class LocalCommandBus:
    def __init__(self, registry: _Registry) -> None:
        self._registry = registry

    async def call(
        self,
        charge_point_id: str,
        action: str,
        payload: dict[str, Any],
        *,
        timeout: float | None = None,
    ) -> dict[str, Any]:
        connection: _Connection | None = self._registry.get(charge_point_id)
        if connection is None:
            raise NotConnected(f"charge point {charge_point_id!r} is not connected")
        return await connection.call(action, payload, timeout=timeout)

    async def is_connected(self, charge_point_id: str) -> bool:
        return self._registry.get(charge_point_id) is not None
