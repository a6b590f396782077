"""DataTransfer from charge points (OCPP 1.6 §4.3): vendor handlers, pluggable.

Handlers are found by ``vendorId``, then ``messageId``. A vendor registers them
from its own package through the entry point group ``kilowatt.data_transfer``::

    [project.entry-points."kilowatt.data_transfer"]
    acme = "acme_kilowatt:setup"        # def setup(registry: DataTransferRegistry) -> None

Unknown vendor → ``UnknownVendorId``; known vendor, unknown message →
``UnknownMessageId`` (a handler registered with ``message_id=None`` takes every
message of its vendor). ``data`` is passed through untouched, as the text it is.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from importlib.metadata import entry_points

__all__ = ["DataTransferRegistry", "DataTransferResult", "VendorHandler"]

log = logging.getLogger("kilowatt.data_transfer")

ENTRY_POINT_GROUP = "kilowatt.data_transfer"


@dataclass(frozen=True, slots=True)
class DataTransferResult:
    status: str  # Accepted | Rejected | UnknownMessageId | UnknownVendorId
    data: str | None = None


VendorHandler = Callable[[str, str | None, str | None], Awaitable[DataTransferResult]]
"""``handler(charge_point_id, message_id, data) -> DataTransferResult``"""


class DataTransferRegistry:
    def __init__(self) -> None:
        self._handlers: dict[str, dict[str | None, VendorHandler]] = {}

    def register(
        self, vendor_id: str, handler: VendorHandler, *, message_id: str | None = None
    ) -> None:
        vendor = self._handlers.setdefault(vendor_id, {})
        if message_id in vendor:
            raise ValueError(f"a DataTransfer handler for {vendor_id}/{message_id} exists")
        vendor[message_id] = handler

    def load_entry_points(self) -> list[str]:
        """Run every installed ``kilowatt.data_transfer`` plug-in; return their names."""
        loaded = []
        for entry in entry_points(group=ENTRY_POINT_GROUP):
            try:
                entry.load()(self)
            except Exception:
                log.exception("DataTransfer plug-in failed to load", extra={"plugin": entry.name})
                continue
            loaded.append(entry.name)
        return loaded

    async def handle(
        self, charge_point_id: str, vendor_id: str, message_id: str | None, data: str | None
    ) -> DataTransferResult:
        vendor = self._handlers.get(vendor_id)
        if vendor is None:
            return DataTransferResult("UnknownVendorId")
        handler = vendor.get(message_id) or vendor.get(None)
        if handler is None:
            return DataTransferResult("UnknownMessageId")
        return await handler(charge_point_id, message_id, data)
