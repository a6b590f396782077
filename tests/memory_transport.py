"""An in-memory stand-in for a charge point's WebSocket: it keeps what is written."""

from __future__ import annotations


class MemoryTransport:
    def __init__(self) -> None:
        self.sent: list[bytes] = []

    def send_text(self, frame: bytes) -> None:
        self.sent.append(frame)

    async def close(self, code: int, reason: str) -> None:
        return None
