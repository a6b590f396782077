"""Which charge points are connected to this process, one live connection per id."""

from __future__ import annotations

from collections.abc import Iterator

from kilowatt.gateway.connection import ChargePointConnection

__all__ = ["ConnectionRegistry"]


class ConnectionRegistry:
    __slots__ = ("_connections",)

    def __init__(self) -> None:
        self._connections: dict[str, ChargePointConnection] = {}

    def register(self, connection: ChargePointConnection) -> ChargePointConnection | None:
        """Make ``connection`` the live one for its id; return the one it replaces."""
        previous = self._connections.get(connection.charge_point_id)
        self._connections[connection.charge_point_id] = connection
        return previous

    def unregister(self, connection: ChargePointConnection) -> bool:
        """Forget ``connection`` unless a newer connection already took its place."""
        if self._connections.get(connection.charge_point_id) is connection:
            del self._connections[connection.charge_point_id]
            return True
        return False

    def get(self, charge_point_id: str) -> ChargePointConnection | None:
        return self._connections.get(charge_point_id)

    def __contains__(self, charge_point_id: object) -> bool:
        return charge_point_id in self._connections

    def __iter__(self) -> Iterator[ChargePointConnection]:
        return iter(list(self._connections.values()))

    def __len__(self) -> int:
        return len(self._connections)
