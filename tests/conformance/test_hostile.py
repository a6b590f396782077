"""The hostile charge point: what Kilowatt does when a charge point misbehaves.

No OCA test case covers these; they are the behaviours we promise in
`docs/hostile.md`, one test each. Charge points retransmit, lose their clock, send
answers to questions nobody asked, pipeline CALLs, reconnect over a connection that
is still half-open, stop answering pings, or send garbage. A Central System has to
keep its records right and keep serving every other charge point.

Messages the `ocpp` package would refuse to send are sent raw (``cp.send`` and
``cp.wire.send`` put on the wire exactly what they are given), and two cases use a
WebSocket client on a bare TCP socket (:class:`RawClient`) that answers nothing at
all, not even a ping.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import itertools
import json
import os
import random
import sys
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
from ocpp.v16 import call, call_result

from kilowatt.config import Settings
from kilowatt.domain.timestamps import parse_timestamp
from tests.conformance.harness import (
    TIMEOUT,
    Server,
    Station,
    register,
    serving,
    stamp,
    station,
    wait_for,
)

_ids = itertools.count(1)

OPCODE_TEXT = 0x1
OPCODE_CLOSE = 0x8
OPCODE_PING = 0x9


def new_id(case: str) -> str:
    return f"H-{case}-{next(_ids)}"


@contextlib.asynccontextmanager
async def booted(server: Server, api: httpx.AsyncClient, case: str) -> AsyncIterator[Station]:
    """A registered charge point, connected and Accepted."""
    charge_point_id = new_id(case)
    await register(api, charge_point_id)
    async with station(server, charge_point_id) as cp:
        assert (await cp.boot()).status == "Accepted"
        yield cp


def start_payload(
    id_tag: str = "HOSTILE1", meter: int = 1000, connector: int = 1, timestamp: str | None = None
) -> dict[str, Any]:
    return {
        "connectorId": connector,
        "idTag": id_tag,
        "meterStart": meter,
        "timestamp": timestamp or stamp(),
    }


async def started(cp: Station, **fields: Any) -> int:
    answer = await cp.result("StartTransaction", start_payload(**fields))
    transaction_id: int = answer["transactionId"]
    return transaction_id


# ------------------------------------------------------------ server state
#
# Read through the operator API; while a route does not exist yet (another change
# adds it), through the CLI on the server's database instead.


def _route_missing(response: httpx.Response) -> bool:
    if response.status_code != 404:
        return False
    try:
        return bool(response.json()["error"]["message"] == "Not Found")
    except (ValueError, KeyError, TypeError):
        return True


async def _cli(server: Server, *args: str) -> Any:
    env = {key: value for key, value in os.environ.items() if not key.startswith("KILOWATT_")}
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "kilowatt",
        *args,
        "--json",
        "--database-url",
        server.database_url,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        env=env,
    )
    try:
        async with asyncio.timeout(30):
            out, err = await process.communicate()
    except TimeoutError:
        process.kill()
        await process.wait()
        raise
    assert process.returncode == 0, err.decode()
    return json.loads(out)


async def transaction(server: Server, api: httpx.AsyncClient, transaction_id: int) -> Any:
    response = await api.get(f"/api/v1/transactions/{transaction_id}")
    if _route_missing(response):
        return await _cli(server, "transactions", "show", str(transaction_id))
    assert response.status_code == 200, response.text
    return response.json()


async def transactions_of(server: Server, api: httpx.AsyncClient, charge_point_id: str) -> Any:
    response = await api.get("/api/v1/transactions", params={"charge_point_id": charge_point_id})
    if _route_missing(response):
        return await _cli(server, "transactions", "list", "--charge-point", charge_point_id)
    assert response.status_code == 200, response.text
    return response.json()["items"]


async def unknown_stops(server: Server, api: httpx.AsyncClient, charge_point_id: str) -> Any:
    response = await api.get("/api/v1/transactions/unknown-stops", params={"limit": 1000})
    if _route_missing(response):
        stops = await _cli(server, "transactions", "unknown-stops", "--limit", "1000")
    else:
        assert response.status_code == 200, response.text
        stops = response.json()
    return [stop for stop in stops if stop["charge_point_id"] == charge_point_id]


async def charge_point(api: httpx.AsyncClient, charge_point_id: str) -> dict[str, Any]:
    response = await api.get(f"/api/v1/charge-points/{charge_point_id}")
    assert response.status_code == 200, response.text
    body: dict[str, Any] = response.json()
    return body


async def connected(api: httpx.AsyncClient, charge_point_id: str) -> bool:
    return bool((await charge_point(api, charge_point_id))["connected"])


async def wait_disconnected(api: httpx.AsyncClient, charge_point_id: str) -> None:
    async def gone() -> bool:
        return not await connected(api, charge_point_id)

    await wait_for(gone, f"{charge_point_id} shown disconnected")


async def get_configuration(api: httpx.AsyncClient, charge_point_id: str) -> httpx.Response:
    """The operator asks the charge point for its configuration (a CS→CP CALL)."""
    return await api.post(
        f"/api/v1/charge-points/{charge_point_id}/calls/GetConfiguration", json={}
    )


def configuration_answer(**_: Any) -> call_result.GetConfiguration:
    return call_result.GetConfiguration(
        configuration_key=[{"key": "HeartbeatInterval", "readonly": False, "value": "300"}]
    )


def log_lines(server: Server, event: str, charge_point_id: str) -> list[str]:
    assert server.log is not None
    marker = f"event={event} " if " " not in event else f'event="{event}" '
    return [
        line
        for line in server.log.read_text().splitlines()
        if marker in line and f"charge_point={charge_point_id} " in line
    ]


# ------------------------------------------------------------ raw client


class RawClient:
    """A WebSocket client on a bare TCP socket that does only what the test says.

    It never answers a ping and never answers a close: seen from the server, a
    charge point whose connection went half-open (the TCP peer still acknowledges,
    nobody reads). Frames are read only when the test asks for them.
    """

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader = reader
        self.writer = writer
        self._ids = itertools.count(1)
        self.seen: list[tuple[int, bytes]] = []  # every frame read, in order

    @classmethod
    async def open(cls, server: Server, charge_point_id: str) -> RawClient:
        async with asyncio.timeout(TIMEOUT):
            reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
            key = base64.b64encode(os.urandom(16)).decode("ascii")
            writer.write(
                (
                    f"GET /ocpp/{charge_point_id} HTTP/1.1\r\n"
                    f"Host: 127.0.0.1:{server.port}\r\n"
                    "Upgrade: websocket\r\n"
                    "Connection: Upgrade\r\n"
                    f"Sec-WebSocket-Key: {key}\r\n"
                    "Sec-WebSocket-Version: 13\r\n"
                    "Sec-WebSocket-Protocol: ocpp1.6\r\n"
                    "\r\n"
                ).encode("ascii")
            )
            await writer.drain()
            head = await reader.readuntil(b"\r\n\r\n")
        status_line = head.split(b"\r\n", 1)[0]
        assert status_line.startswith(b"HTTP/1.1 101 "), head
        return cls(reader, writer)

    async def send_text(self, text: str) -> None:
        payload = text.encode()
        mask = os.urandom(4)
        header = bytearray([0x80 | OPCODE_TEXT])
        if len(payload) < 126:
            header.append(0x80 | len(payload))
        elif len(payload) < 1 << 16:
            header.append(0x80 | 126)
            header += len(payload).to_bytes(2, "big")
        else:
            header.append(0x80 | 127)
            header += len(payload).to_bytes(8, "big")
        masked = bytes(byte ^ mask[index % 4] for index, byte in enumerate(payload))
        self.writer.write(bytes(header) + mask + masked)
        await self.writer.drain()

    async def read_frame(self) -> tuple[int, bytes]:
        """The next frame from the server (unmasked, never fragmented at these sizes)."""
        async with asyncio.timeout(TIMEOUT):
            first, second = await self.reader.readexactly(2)
            length = second & 0x7F
            if length == 126:
                length = int.from_bytes(await self.reader.readexactly(2), "big")
            elif length == 127:
                length = int.from_bytes(await self.reader.readexactly(8), "big")
            frame = (first & 0x0F, await self.reader.readexactly(length))
        self.seen.append(frame)
        return frame

    async def call(self, action: str, payload: dict[str, Any]) -> list[Any]:
        unique_id = f"raw-{next(self._ids)}"
        await self.send_text(json.dumps([2, unique_id, action, payload]))
        while True:
            opcode, data = await self.read_frame()
            if opcode == OPCODE_TEXT:
                frame: list[Any] = json.loads(data)
                if frame[1] == unique_id:
                    return frame

    async def frames_until_closed(self) -> list[tuple[int, bytes]]:
        """Every frame up to and including the server's close frame."""
        frames = []
        while True:
            opcode, data = await self.read_frame()
            frames.append((opcode, data))
            if opcode == OPCODE_CLOSE:
                return frames

    async def at_eof(self) -> bool:
        async with asyncio.timeout(TIMEOUT):
            rest = await self.reader.read()
        return rest == b"" and self.reader.at_eof()

    def abort(self) -> None:
        self.writer.transport.abort()


def close_of(frame: tuple[int, bytes]) -> tuple[int, str]:
    opcode, data = frame
    assert opcode == OPCODE_CLOSE
    return int.from_bytes(data[:2], "big"), data[2:].decode()


BOOT = {"chargePointVendor": "Hostile", "chargePointModel": "H-1"}


# ------------------------------------------------------------ retransmissions


async def test_hostile_duplicate_start_transaction(server: Server, api: httpx.AsyncClient) -> None:
    """A StartTransaction sent twice (the answer was lost) is one transaction.

    The retransmission has another message id and the same content; it gets the
    same transactionId and idTagInfo, and nothing is stored twice.
    """
    async with booted(server, api, "DUPSTART") as cp:
        payload = start_payload(meter=1000, timestamp=stamp(-60))
        first = await cp.send("StartTransaction", payload)
        second = await cp.send("StartTransaction", payload)
        assert first[0] == 3 and second[0] == 3
        assert first[1] != second[1]
        assert second[2] == first[2]
        transaction_id = first[2]["transactionId"]
        stored = await transactions_of(server, api, cp.id)
        assert [t["id"] for t in stored] == [transaction_id]
        assert stored[0]["state"] == "active"
        assert stored[0]["meter_start"] == 1000
        assert parse_timestamp(stored[0]["started_at"]) == parse_timestamp(payload["timestamp"])


async def test_hostile_duplicate_stop_transaction(server: Server, api: httpx.AsyncClient) -> None:
    """A StopTransaction sent twice gets the same answer and is stored once.

    Its transactionData (the meter values of the session) is not stored twice
    either, and the transaction is not flagged as stopped twice.
    """
    async with booted(server, api, "DUPSTOP") as cp:
        transaction_id = await started(cp, meter=1000, timestamp=stamp(-3600))
        end = stamp()
        payload = {
            "transactionId": transaction_id,
            "meterStop": 1500,
            "timestamp": end,
            "idTag": "HOSTILE1",
            "reason": "Local",
            "transactionData": [
                {
                    "timestamp": end,
                    "sampledValue": [
                        {
                            "value": "1500",
                            "context": "Transaction.End",
                            "measurand": "Energy.Active.Import.Register",
                            "unit": "Wh",
                        }
                    ],
                }
            ],
        }
        first = await cp.send("StopTransaction", payload)
        second = await cp.send("StopTransaction", payload)
        assert first[0] == 3 and second[0] == 3
        assert second[2] == first[2]
        assert set(first[2]) == {"idTagInfo"}
        stored = await transaction(server, api, transaction_id)
        assert stored["state"] == "completed"
        assert (stored["meter_stop"], stored["energy_wh"]) == (1500, 500)
        assert stored["stop_reason"] == "Local"
        assert stored["flags"] == []
        assert [v["raw_value"] for v in stored["meter_values"]] == ["1500"]
        assert len(await transactions_of(server, api, cp.id)) == 1


# ------------------------------------------------------------ implausible data


async def test_hostile_stop_unknown_transaction(server: Server, api: httpx.AsyncClient) -> None:
    """A StopTransaction for a transactionId we never issued is answered, and kept.

    OCPP 1.6 §4.11 gives the Central System no error to answer with, and a
    CALLERROR would make the charge point retransmit the message forever: the
    answer is a CALLRESULT (with idTagInfo, as the request carried an idTag) and the
    message is kept for an operator. A transactionId of another charge point counts
    as unknown too, and that transaction is left alone.
    """
    unknown_id = 1_900_000_000 + random.randrange(1_000_000)
    async with (
        booted(server, api, "UNKSTOP") as cp,
        booted(server, api, "UNKSTOP-OTHER") as other,
    ):
        payload = {
            "transactionId": unknown_id,
            "meterStop": 4242,
            "timestamp": stamp(),
            "idTag": "HOSTILE1",
            "reason": "PowerLoss",
        }
        first = await cp.send("StopTransaction", payload)
        assert first[0] == 3, first
        assert set(first[2]) == {"idTagInfo"}
        again = await cp.send("StopTransaction", payload)
        assert again[0] == 3 and again[2] == first[2]

        others = await started(other, meter=100)
        theft = await cp.send(
            "StopTransaction",
            {"transactionId": others, "meterStop": 200, "timestamp": stamp()},
        )
        assert theft[0] == 3 and theft[2] == {}

        kept = await unknown_stops(server, api, cp.id)
        assert sorted((s["transaction_id"], s["meter_stop"]) for s in kept) == sorted(
            [(unknown_id, 4242), (others, 200)]
        )
        mine = next(s for s in kept if s["transaction_id"] == unknown_id)
        assert (mine["id_tag"], mine["reason"]) == ("HOSTILE1", "PowerLoss")
        assert parse_timestamp(mine["timestamp"]) == parse_timestamp(payload["timestamp"])
        assert await transactions_of(server, api, cp.id) == []
        untouched = await transaction(server, api, others)
        assert untouched["state"] == "active" and untouched["meter_stop"] is None


async def test_hostile_meter_stop_below_meter_start(server: Server, api: httpx.AsyncClient) -> None:
    """meterStop < meterStart: answered, readings kept, no energy, flagged.

    A meter that went backwards (replaced meter, rollover, firmware bug) gives no
    energy anyone could bill: energy is left empty and the transaction is flagged
    ``negative_energy`` for an operator, with both raw readings stored.
    """
    async with booted(server, api, "NEGATIVE") as cp:
        transaction_id = await started(cp, meter=5000, timestamp=stamp(-600))
        answer = await cp.send(
            "StopTransaction",
            {"transactionId": transaction_id, "meterStop": 4000, "timestamp": stamp()},
        )
        assert answer[0] == 3 and answer[2] == {}
        stored = await transaction(server, api, transaction_id)
        assert stored["state"] == "completed"
        assert (stored["meter_start"], stored["meter_stop"]) == (5000, 4000)
        assert stored["energy_wh"] is None
        assert "negative_energy" in stored["flags"]


async def test_hostile_timestamps_far_from_now(server: Server, api: httpx.AsyncClient) -> None:
    """Timestamps years in the past or the future: answered, stored as given.

    A charge point with a dead RTC battery reports 2001; one with a bad clock sync
    reports decades ahead. The Central System does not rewrite what the charge
    point says (the readings may still be right), so the times are stored as
    given; one in the future (beyond a day of clock skew) is flagged
    ``timestamp_in_future``. One in the past is not flagged: an offline charge
    point legitimately reports old sessions late.
    """
    async with booted(server, api, "CLOCK") as cp:
        past_start, past_stop = "2001-02-03T04:05:06Z", "2001-02-03T05:05:06Z"
        past = await started(cp, meter=0, connector=1, timestamp=past_start)
        answer = await cp.send(
            "StopTransaction",
            {"transactionId": past, "meterStop": 7000, "timestamp": past_stop},
        )
        assert answer[0] == 3
        stored = await transaction(server, api, past)
        assert parse_timestamp(stored["started_at"]) == parse_timestamp(past_start)
        assert parse_timestamp(stored["stopped_at"]) == parse_timestamp(past_stop)
        assert (stored["state"], stored["energy_wh"]) == ("completed", 7000)
        assert stored["flags"] == []

        twenty_years = 20 * 365 * 24 * 3600
        future_start, future_stop = stamp(twenty_years), stamp(twenty_years + 3600)
        future = await started(cp, meter=0, connector=2, timestamp=future_start)
        stored = await transaction(server, api, future)
        assert parse_timestamp(stored["started_at"]) == parse_timestamp(future_start)
        assert stored["flags"] == ["timestamp_in_future"]
        answer = await cp.send(
            "StopTransaction",
            {"transactionId": future, "meterStop": 3000, "timestamp": future_stop},
        )
        assert answer[0] == 3
        stored = await transaction(server, api, future)
        assert parse_timestamp(stored["stopped_at"]) == parse_timestamp(future_stop)
        assert (stored["state"], stored["energy_wh"]) == ("completed", 3000)
        assert stored["flags"] == ["timestamp_in_future"]


# ------------------------------------------------------------ protocol abuse


async def test_hostile_callresult_for_unknown_id(server: Server, api: httpx.AsyncClient) -> None:
    """A CALLRESULT (or CALLERROR) answering a CALL we never sent is ignored.

    OCPP-J 1.6 §4.1.3 answers only CALLs; an answer that matches no outstanding
    CALL of ours is dropped (and logged), not answered. The connection stays usable
    both ways.
    """
    async with booted(server, api, "STRAYRESULT") as cp:
        cp.answers["GetConfiguration"] = configuration_answer
        await cp.wire.send(json.dumps([3, "never-sent-1", {"status": "Accepted"}]))
        await cp.wire.send(json.dumps([4, "never-sent-2", "GenericError", "", {}]))
        heartbeat = await cp.call(call.Heartbeat())
        assert heartbeat.current_time.endswith("Z")
        response = await get_configuration(api, cp.id)
        assert response.status_code == 200, response.text
        assert response.json()["configurationKey"][0]["key"] == "HeartbeatInterval"
        strays = [f for d, f in cp.wire.frames if d == "in" and str(f[1]).startswith("never")]
        assert strays == []
        assert cp.wire.ws.close_code is None
        assert await connected(api, cp.id)


async def test_hostile_second_call_before_first_answered(
    server: Server, api: httpx.AsyncClient
) -> None:
    """CALLs pipelined without waiting for answers: all answered, in order.

    OCPP-J 1.6 §4.1.1 says a charge point SHOULD NOT do this. Refusing would lose
    messages from charge points that do it anyway, so a few are queued and handled
    strictly one after the other: the answers come in the order of the CALLs, even
    when a later one (Heartbeat) is quicker to answer than an earlier one
    (StartTransaction, which is committed to the database first).
    """
    async with booted(server, api, "PIPELINE") as cp:
        calls = [
            ("p-1", "StartTransaction", start_payload(meter=10)),
            ("p-2", "Heartbeat", {}),
            (
                "p-3",
                "StatusNotification",
                {"connectorId": 1, "errorCode": "NoError", "status": "Charging"},
            ),
        ]
        before = len(cp.wire.frames)
        for unique_id, action, payload in calls:
            await cp.wire.send(json.dumps([2, unique_id, action, payload]))
        answers = [await cp.answer_to(unique_id, before) for unique_id, _, _ in calls]
        assert [a[0] for a in answers] == [3, 3, 3]
        arrived = [f[1] for d, f in cp.wire.frames[before:] if d == "in" and f[0] in (3, 4)]
        assert arrived == ["p-1", "p-2", "p-3"]
        stored = await transactions_of(server, api, cp.id)
        assert [t["id"] for t in stored] == [answers[0][2]["transactionId"]]
        state = await charge_point(api, cp.id)
        assert [(c["connector_id"], c["status"]) for c in state["connectors"]] == [(1, "Charging")]


async def test_hostile_reconnect_while_half_open(server: Server, api: httpx.AsyncClient) -> None:
    """A second connection with the same id while the first is half-open: the new wins.

    A charge point whose network dropped reconnects before the Central System has
    noticed that the old TCP connection is dead. The new connection takes the id at
    once (the charge point cannot wait for our timeouts), CALLs to it go to the new
    one, and the old one is sent a close (1000, "replaced by a new connection") in
    the background. When the old socket finally goes away, the charge point stays
    shown connected: its new connection is live.
    """
    charge_point_id = new_id("HALFOPEN")
    await register(api, charge_point_id)
    old = await RawClient.open(server, charge_point_id)
    try:
        boot = await old.call("BootNotification", BOOT)
        assert boot[0] == 3 and boot[2]["status"] == "Accepted"
        # From here on the old connection answers nothing: half-open.
        async with station(server, charge_point_id) as cp:
            cp.answers["GetConfiguration"] = configuration_answer
            assert (await cp.boot()).status == "Accepted"
            assert await connected(api, charge_point_id)
            response = await get_configuration(api, charge_point_id)
            assert response.status_code == 200, response.text
            assert [action for action, _ in cp.received] == ["GetConfiguration"]

            frames = await old.frames_until_closed()
            assert [opcode for opcode, _ in frames] == [OPCODE_CLOSE], frames
            assert close_of(frames[-1]) == (1000, "replaced by a new connection")

            # The old socket dies for good: the new connection is unaffected.
            old.abort()

            async def old_gone() -> bool:
                return len(log_lines(server, "disconnected", charge_point_id)) == 1

            await wait_for(old_gone, "the old connection's end")
            assert await connected(api, charge_point_id)
            response = await get_configuration(api, charge_point_id)
            assert response.status_code == 200, response.text
            assert len(cp.received) == 2
            heartbeat = await cp.call(call.Heartbeat())
            assert heartbeat.current_time.endswith("Z")
        await wait_disconnected(api, charge_point_id)
    finally:
        old.abort()


async def test_hostile_never_answers_pings(tmp_path: Path) -> None:
    """A charge point that stops answering WebSocket pings is disconnected.

    RFC 6455 §5.5.2/5.5.3: a pong must answer every ping. With ``ping_interval``
    and ``ping_timeout`` set, a connection without a pong in time is dead (a
    half-open TCP connection never reports itself): it is closed (1011, "keepalive
    ping timeout") and the charge point shown disconnected at once, so that an
    operator's CALL is refused as "not connected" (409) instead of being written
    into a dead socket and waiting for a timeout. Choice: "at once" allows a few
    seconds for the bookkeeping, not another round of waiting (the 10 s closing
    handshake) for a peer that has just shown it answers nothing. A charge point
    that does answer pings, meanwhile, stays connected.
    """
    interval = timeout = 0.5
    grace = 3.0  # seconds: bookkeeping on a busy machine, far below close_timeout
    async with (
        serving(tmp_path, ping_interval=interval, ping_timeout=timeout) as server,
        server.api() as api,
    ):
        mute_id, alive_id = "H-MUTE-1", "H-ALIVE-1"
        await register(api, mute_id)
        await register(api, alive_id)
        loop = asyncio.get_running_loop()
        async with station(server, alive_id) as alive:
            mute = await RawClient.open(server, mute_id)
            try:
                boot = await mute.call("BootNotification", BOOT)
                assert boot[0] == 3 and boot[2]["status"] == "Accepted"
                assert await connected(api, mute_id)
                began = loop.time()

                # The server pings, gets no pong, and closes: on the wire, pings only
                # after the answer to the boot, then the close, then the end of TCP.
                await mute.frames_until_closed()
                closed = loop.time()
                assert closed - began < interval + timeout + grace
                opcodes = [opcode for opcode, _ in mute.seen if opcode != OPCODE_TEXT]
                assert len(opcodes) > 1 and set(opcodes[:-1]) == {OPCODE_PING}, opcodes
                assert [opcode for opcode, _ in mute.seen].count(OPCODE_TEXT) == 1
                assert close_of(mute.seen[-1]) == (1011, "keepalive ping timeout")
                assert await mute.at_eof()

                # What the operator sees from then on, and a CALL they send meanwhile.
                async def shown_disconnected_after() -> float:
                    async with asyncio.timeout(30):
                        while await connected(api, mute_id):
                            await asyncio.sleep(0.05)
                    return loop.time() - closed

                async def operator_call() -> tuple[httpx.Response, float]:
                    response = await api.post(
                        f"/api/v1/charge-points/{mute_id}/calls/GetConfiguration",
                        json={},
                        timeout=30,
                    )
                    return response, loop.time() - closed

                shown_after, (response, answered_after) = await asyncio.gather(
                    shown_disconnected_after(), operator_call()
                )
                assert shown_after < grace, (
                    f"the charge point was still shown connected {shown_after:.1f} s after "
                    "the keepalive closed its connection"
                )
                assert response.status_code == 409 and answered_after < grace, (
                    f"a CALL to it got {response.status_code} after {answered_after:.1f} s "
                    "(call_timeout 5 s)"
                )
            finally:
                mute.abort()

            # The charge point that answers pings (the `websockets` client does) lived
            # through the same pings and is still connected and answered.
            assert await connected(api, alive_id)
            assert (await alive.boot()).status == "Accepted"
            assert alive.wire.ws.close_code is None


async def test_hostile_invalid_frame_flood(server: Server, api: httpx.AsyncClient) -> None:
    """A flood of invalid frames closes that charge point's connection, and only that one.

    Each invalid frame is answered with the CALLERROR OCPP-J names when it can be
    answered, dropped when it cannot; beyond ``bad_frame_limit`` of them within
    10 s the connection is closed with 1008 (policy violation). The charge point is
    shown disconnected; every other charge point is answered as before, including
    while the flood is going on.
    """
    limit = Settings.model_fields["bad_frame_limit"].default  # the server runs with it
    assert isinstance(limit, int)
    garbage: list[str | bytes] = []
    answerable: list[str] = []
    for index in range(limit + 1):
        kind = index % 4
        if kind == 0:
            garbage.append("this is not JSON")
        elif kind == 1:
            answerable.append(f"bad-{index}")
            garbage.append(json.dumps([2, f"bad-{index}", "BootNotification", {}]))
        elif kind == 2:
            garbage.append(b"\x00\x01binary")
        else:
            answerable.append(f"bad-{index}")
            garbage.append(json.dumps([2, f"bad-{index}", "NoSuchAction", {}]))
    async with (
        booted(server, api, "FLOOD") as flooder,
        booted(server, api, "BYSTANDER") as bystander,
    ):

        async def flood() -> None:
            for frame in garbage:
                await flooder.wire.ws.send(frame)

        async def meanwhile() -> list[Any]:
            return [await bystander.call(call.Heartbeat()) for _ in range(5)]

        _, heartbeats = await asyncio.gather(flood(), meanwhile())
        assert len(heartbeats) == 5
        async with asyncio.timeout(TIMEOUT):
            await flooder.wire.ws.wait_closed()
        assert flooder.wire.ws.close_code == 1008
        assert flooder.wire.ws.close_reason == "too many invalid frames"
        errors = [f for d, f in flooder.wire.frames if d == "in" and f[0] == 4]
        assert [f[1] for f in errors] == answerable
        assert errors[0][2] == "ProtocolError", errors[0]  # OCPP-J §4.2.3: payload incomplete
        assert errors[1][2] == "NotImplemented"
        await wait_disconnected(api, flooder.id)

        assert await connected(api, bystander.id)
        status = await bystander.status(1, "Available")
        assert status is not None
        assert bystander.wire.ws.close_code is None
