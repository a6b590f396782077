"""The message log: frames in and out, truncation, buffering, retention and the API."""

from __future__ import annotations

import asyncio
import marshal
import os
import signal
import struct
import time
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, cast

import orjson
import pytest

from kilowatt.app import Application
from kilowatt.clock import FakeClock
from kilowatt.config import load_settings
from kilowatt.message_log_process import (
    MessageLogProcessError,
    ShippedMessageLog,
    child_log_store,
    start_child,
)
from kilowatt.services.message_log import PREPARE_SLICE, FrameRow, LoggedFrame, MessageLog
from kilowatt.store.sql.database import SqlStore, open_store
from kilowatt.store.sql.message_log import SqlMessageLog
from kilowatt.store.sql.migrate import upgrade
from tests.events.conftest import (
    TIMEOUT,
    StartApp,
    api_client,
    charge_point,
    read_token,
)

BOOT = {"chargePointVendor": "Acme", "chargePointModel": "Volt 22", "firmwareVersion": "1.2"}
STATUS = {"connectorId": 1, "status": "Available", "errorCode": "NoError"}


def _log(app: Application) -> MessageLog:
    message_log = app.services.message_log
    assert message_log is not None
    return message_log


async def _oldest_first(app: Application, charge_point_id: str = "CP1") -> list[LoggedFrame]:
    return list(reversed(await _log(app).list_messages(charge_point_id, limit=1000)))


def _ours(frames: list[LoggedFrame]) -> list[LoggedFrame]:
    """The frames of the test client's calls (ids m1, m2 …) and their answers.

    After an accepted boot the server may send CALLs of its own (configuration
    synchronization); those are logged too, but are not what these tests are about.
    """
    return [f for f in frames if f.unique_id is None or f.unique_id.startswith("m")]


# ------------------------------------------------------------------ real app


@pytest.fixture(params=["inline", "process"])
def log_app(request: pytest.FixtureRequest, start_app: StartApp) -> StartApp:
    """``start_app`` with the message log written in the server's process, and in a
    process of its own (``message_log_process``, the default of ``kilowatt serve``)."""
    in_process = request.param == "process"

    async def start(**overrides: Any) -> Application:
        return await start_app(**{"message_log_process": in_process, **overrides})

    return start


async def test_frames_in_and_out_are_logged_in_order(log_app: StartApp) -> None:
    app = await log_app()
    before = datetime.now(UTC)
    async with charge_point(app) as cp:
        await cp.result("BootNotification", BOOT)
        await cp.result("Heartbeat", {})
        await cp.result("StatusNotification", STATUS)
        # Not JSON at all: logged as it came, with nothing parsed.
        await cp.ws.send("hello")
        await cp.result("Heartbeat", {})
    await _log(app).flush()

    logged = await _oldest_first(app)
    for other in logged:
        if other.unique_id is not None and not other.unique_id.startswith("m"):
            # A CALL of the server's own, and nothing answered it (the client never does).
            assert (other.direction, other.message_type) == ("out", 2)
    frames = _ours(logged)
    assert [(f.direction, f.message_type, f.action, f.unique_id) for f in frames] == [
        ("in", 2, "BootNotification", "m1"),
        ("out", 3, "BootNotification", "m1"),
        ("in", 2, "Heartbeat", "m2"),
        ("out", 3, "Heartbeat", "m2"),
        ("in", 2, "StatusNotification", "m3"),
        ("out", 3, "StatusNotification", "m3"),
        ("in", None, None, None),
        ("in", 2, "Heartbeat", "m4"),
        ("out", 3, "Heartbeat", "m4"),
    ]
    assert orjson.loads(frames[0].frame) == [2, "m1", "BootNotification", BOOT]
    assert orjson.loads(frames[1].frame)[2]["status"] == "Accepted"
    assert frames[6].frame == "hello"
    for frame in frames:
        assert frame.charge_point_id == "CP1"
        assert not frame.truncated
        assert frame.size == len(frame.frame.encode())
        assert before - timedelta(seconds=1) <= frame.logged_at <= datetime.now(UTC)
    times = [frame.logged_at for frame in logged]
    assert times == sorted(times)


async def test_the_background_task_writes_without_being_asked(log_app: StartApp) -> None:
    app = await log_app(message_log_flush_interval=0.05)
    async with charge_point(app) as cp:
        await cp.call("Heartbeat", {})  # not booted: a CALLERROR, logged all the same
        async with asyncio.timeout(TIMEOUT):
            while len(await _log(app).list_messages("CP1")) < 2:
                await asyncio.sleep(0.02)
    assert _log(app).flushes >= 1


async def test_long_frames_are_cut_and_marked(log_app: StartApp) -> None:
    app = await log_app(message_log_max_payload=100)
    data = "é" * 300  # two bytes each in UTF-8
    async with charge_point(app) as cp:
        await cp.result("BootNotification", BOOT)
        answer = await cp.call("DataTransfer", {"vendorId": "com.example", "data": data})
    await _log(app).flush()

    frames = await _oldest_first(app)
    incoming = next(f for f in frames if f.action == "DataTransfer" and f.direction == "in")
    sent = orjson.dumps([2, "m2", "DataTransfer", {"vendorId": "com.example", "data": data}])
    assert incoming.truncated
    assert incoming.size == len(sent)
    assert 99 <= len(incoming.frame.encode()) <= 100  # cut between two characters
    assert sent.decode().startswith(incoming.frame)
    # The start of the frame is still parsed.
    assert (incoming.message_type, incoming.unique_id) == (2, "m2")
    answered = next(f for f in frames if f.action == "DataTransfer" and f.direction == "out")
    assert not answered.truncated
    assert orjson.loads(answered.frame) == answer


async def test_retention_deletes_old_rows(start_app: StartApp) -> None:
    clock = FakeClock(datetime(2026, 3, 1, tzinfo=UTC))
    app = await start_app(clock=clock, message_log_retention_days=7)
    async with charge_point(app) as cp:
        await cp.result("BootNotification", BOOT)
        await _log(app).flush()
        clock.advance(timedelta(days=6).total_seconds())
        await cp.result("Heartbeat", {})
        await _log(app).flush()
        clock.advance(timedelta(days=2).total_seconds())
        await cp.result("StatusNotification", STATUS)
        await _log(app).flush()

    logged = await _oldest_first(app)
    assert [f.logged_at.date().isoformat() for f in logged[:2]] == ["2026-03-01"] * 2
    # Now 2026-03-09: the boot (8 days old) goes, the heartbeat (2 days) stays.
    cutoff = clock.now() - timedelta(days=7)
    old = [f for f in logged if f.logged_at < cutoff]
    assert {f.action for f in _ours(old)} == {"BootNotification"}
    assert await _log(app).purge() == len(old)
    left = await _oldest_first(app)
    assert all(f.logged_at >= cutoff for f in left)
    assert [(f.direction, f.action) for f in _ours(left)] == [
        ("in", "Heartbeat"),
        ("out", "Heartbeat"),
        ("in", "StatusNotification"),
        ("out", "StatusNotification"),
    ]
    assert await _log(app).purge() == 0


async def test_api_lists_newest_first_with_filters(log_app: StartApp) -> None:
    app = await log_app()
    headers = await read_token(app)
    async with charge_point(app) as cp:
        await cp.result("BootNotification", BOOT)
        await cp.result("Heartbeat", {})
        await cp.result("Heartbeat", {})
    async with charge_point(app, "CP2") as other:
        await other.call("Heartbeat", {})
    await _log(app).flush()

    async with api_client(app) as http:
        base = "/api/v1/charge-points/CP1/messages"
        response = await http.get(base, headers=headers)
        assert response.status_code == 200, response.text
        listed = response.json()
        ours = [m for m in listed if m["unique_id"].startswith("m")]
        assert [(m["direction"], m["action"]) for m in ours] == [
            ("out", "Heartbeat"),
            ("in", "Heartbeat"),
            ("out", "Heartbeat"),
            ("in", "Heartbeat"),
            ("out", "BootNotification"),
            ("in", "BootNotification"),
        ]
        first = ours[0]
        assert set(first) == {
            "id",
            "charge_point_id",
            "direction",
            "time",
            "message_type",
            "unique_id",
            "action",
            "frame",
            "size",
            "truncated",
        }
        assert first["charge_point_id"] == "CP1"
        assert orjson.loads(first["frame"])[0] == 3

        page = (await http.get(base, params={"limit": 2}, headers=headers)).json()
        assert [m["id"] for m in page] == [m["id"] for m in listed[:2]]
        rest = (
            await http.get(base, params={"limit": 10, "before_id": page[-1]["id"]}, headers=headers)
        ).json()
        assert [m["id"] for m in rest] == [m["id"] for m in listed[2:]]

        incoming = (await http.get(base, params={"direction": "in"}, headers=headers)).json()
        assert [m["id"] for m in incoming] == [m["id"] for m in listed if m["direction"] == "in"]
        assert [m["action"] for m in incoming] == ["Heartbeat", "Heartbeat", "BootNotification"]
        boots = (
            await http.get(base, params={"action": "BootNotification"}, headers=headers)
        ).json()
        assert [m["direction"] for m in boots] == ["out", "in"]
        both = {"direction": "out", "action": "Heartbeat"}
        assert len((await http.get(base, params=both, headers=headers)).json()) == 2
        cp2 = (await http.get("/api/v1/charge-points/CP2/messages", headers=headers)).json()
        assert {m["charge_point_id"] for m in cp2} == {"CP2"}

        # Frames of a charge point nobody registered are kept too: no 404, a list.
        nobody = await http.get("/api/v1/charge-points/NOBODY/messages", headers=headers)
        assert (nobody.status_code, nobody.json()) == (200, [])
        assert (await http.get(base)).status_code == 401
        invalid = await http.get(base, params={"direction": "sideways"}, headers=headers)
        assert invalid.status_code == 422
        assert invalid.json()["error"]["code"] == "validation_error"
        assert (await http.get(base, params={"limit": 0}, headers=headers)).status_code == 422
        too_big = {"before_id": 2**63}  # beyond the 64-bit id column: refused, not a 500
        assert (await http.get(base, params=too_big, headers=headers)).status_code == 422
        nul = {"action": "Heart\x00beat"}
        assert (await http.get(base, params=nul, headers=headers)).status_code == 422


async def test_disabled_log_records_nothing_and_says_so(start_app: StartApp) -> None:
    app = await start_app(message_log_enabled=False)
    assert app.services.message_log is None
    headers = await read_token(app)
    async with charge_point(app) as cp:
        await cp.call("Heartbeat", {})
    async with api_client(app) as http:
        response = await http.get("/api/v1/charge-points/CP1/messages", headers=headers)
    assert response.status_code == 404
    assert "message_log_enabled" in response.json()["error"]["message"]


async def test_stop_writes_what_is_buffered(log_app: StartApp) -> None:
    app = await log_app(message_log_flush_interval=3600)
    async with charge_point(app) as cp:
        await cp.call("Heartbeat", {})
    await app.stop()

    store = open_store(app.settings.message_log_url)
    try:
        frames = await SqlMessageLog(store).list_messages("CP1")
    finally:
        await store.close()
    assert [(f.direction, f.action) for f in frames] == [("out", "Heartbeat"), ("in", "Heartbeat")]


# ------------------------------------------------- the log's own process


BOOT_AND_HEARTBEAT = [
    ("in", "BootNotification"),
    ("out", "BootNotification"),
    ("in", "Heartbeat"),
    ("out", "Heartbeat"),
]


def _shipped(app: Application) -> ShippedMessageLog:
    message_log = _log(app)
    assert isinstance(message_log, ShippedMessageLog)
    return message_log


async def test_the_process_prepares_and_writes_what_the_server_only_buffers(
    start_app: StartApp, monkeypatch: pytest.MonkeyPatch
) -> None:
    def not_here(*args: Any, **kwargs: Any) -> Any:
        raise AssertionError("the message log was prepared or written in the server's process")

    # In this (the server's) process, preparing or inserting a frame fails the test;
    # the child process runs its own, untouched code.
    monkeypatch.setattr(MessageLog, "_prepare", not_here)
    monkeypatch.setattr(SqlMessageLog, "insert", not_here)
    app = await start_app(message_log_process=True, message_log_flush_interval=3600)
    shipped = _shipped(app)
    assert shipped.pid is not None and shipped.pid != os.getpid()
    async with charge_point(app) as cp:
        await cp.result("BootNotification", BOOT)
        await cp.result("Heartbeat", {})
    assert await shipped.flush() > 0  # shipped, and written by the child before it returns

    frames = _ours(await _oldest_first(app))
    assert [(f.direction, f.action) for f in frames] == BOOT_AND_HEARTBEAT
    # In a database file of its own, not the main one (whose writer it would starve).
    assert app.settings.message_log_url.endswith("k-messages.db")
    main = open_store(app.settings.database_url)
    try:
        assert await SqlMessageLog(main).list_messages("CP1") == []
    finally:
        await main.close()


async def test_the_log_process_writes_into_either_database(
    start_app: StartApp, engine_url: str
) -> None:
    # SQLite: a file of its own beside the main one; PostgreSQL: the same database.
    app = await start_app(
        database_url=engine_url, message_log_process=True, message_log_flush_interval=3600
    )
    async with charge_point(app) as cp:
        await cp.result("BootNotification", BOOT)
    await _shipped(app).flush()
    frames = _ours(await _oldest_first(app))
    assert [(f.direction, f.action) for f in frames] == [
        ("in", "BootNotification"),
        ("out", "BootNotification"),
    ]
    if engine_url.startswith("postgresql"):
        assert app.settings.message_log_url == engine_url
    else:
        assert app.settings.message_log_url != engine_url


async def test_a_log_of_its_own_written_in_the_server_s_process(
    start_app: StartApp, tmp_path: Path
) -> None:
    # Its table is made at start (MessageLog.start prepares the store): no migration
    # of the main database ever touches that file.
    url = f"sqlite:///{tmp_path}/elsewhere.db"
    app = await start_app(message_log_process=False, message_log_database_url=url)
    assert not isinstance(_log(app), ShippedMessageLog)
    async with charge_point(app) as cp:
        await cp.result("BootNotification", BOOT)
        await cp.result("Heartbeat", {})
    await _log(app).flush()
    await app.stop()
    store = open_store(url)
    try:
        frames = _ours(list(reversed(await SqlMessageLog(store).list_messages("CP1"))))
    finally:
        await store.close()
    assert [(f.direction, f.action) for f in frames] == BOOT_AND_HEARTBEAT


async def test_a_log_process_that_dies_is_replaced(start_app: StartApp) -> None:
    app = await start_app(message_log_process=True, message_log_flush_interval=3600)
    shipped = _shipped(app)
    first = shipped.pid
    assert first is not None
    async with charge_point(app) as cp:
        await cp.result("BootNotification", BOOT)
        await shipped.flush()
        os.kill(first, signal.SIGKILL)
        async with asyncio.timeout(TIMEOUT):
            while shipped.pid is not None:
                await asyncio.sleep(0.01)
        await cp.result("Heartbeat", {})
        await shipped.flush()  # starts another child, which writes the heartbeat

    assert shipped.restarts == 1
    assert shipped.pid not in (None, first)
    frames = _ours(await _oldest_first(app))
    assert [(f.direction, f.action) for f in frames] == BOOT_AND_HEARTBEAT


async def test_a_stuck_log_process_is_replaced_and_never_holds_the_server(
    start_app: StartApp,
) -> None:
    app = await start_app(message_log_process=True, message_log_flush_interval=3600)
    shipped = _shipped(app)
    shipped._stop_timeout = 0.5  # how long a full pipe is waited for
    stuck = shipped.pid
    assert stuck is not None
    os.kill(stuck, signal.SIGSTOP)  # alive, reading nothing: its pipe fills up
    for n in range(1000):
        shipped.frame_received("CP-LOUD", f'[2,"{n}","DataTransfer",' + "x" * 4000)
    async with asyncio.timeout(TIMEOUT):
        assert await MessageLog.flush(shipped) == 0  # shipped nowhere: the pipe stayed full
    assert shipped.dropped == 1000
    async with asyncio.timeout(TIMEOUT):
        while shipped.pid is not None:  # stopped for good (killed)
            await asyncio.sleep(0.01)
    async with charge_point(app) as cp:
        await cp.result("BootNotification", BOOT)
        await cp.result("Heartbeat", {})
    await shipped.flush()  # another child writes these
    assert shipped.restarts == 1
    assert app.metrics is not None
    scraped = app.metrics.render().decode()
    assert "kilowatt_message_log_frames_dropped_total 1000.0" in scraped
    assert "kilowatt_message_log_process_restarts_total 1.0" in scraped
    frames = _ours(await _oldest_first(app))
    assert [(f.direction, f.action) for f in frames] == BOOT_AND_HEARTBEAT


async def test_a_log_process_that_cannot_start_stops_the_server_from_starting(
    start_app: StartApp, tmp_path: Path
) -> None:
    unusable = tmp_path / "a-file-not-a-directory"
    unusable.write_text("")
    with pytest.raises(MessageLogProcessError, match="message_log_process = false"):
        await start_app(
            message_log_process=True,
            message_log_database_url=f"sqlite:///{unusable}/messages.db",
        )


async def test_the_log_process_writes_what_it_holds_when_its_server_goes(tmp_path: Path) -> None:
    # The server's end of the pipe closing (a clean stop, or the kernel after a crash
    # of the server): the child writes what it was sent, then exits by itself.
    url = f"sqlite:///{tmp_path}/messages.db"
    config = {
        "url": url,
        "database": url,  # as its log lines name it
        "sqlite_synchronous": "FULL",
        "flush_interval": 3600.0,  # never on its own: only the end writes
        "log_level": "warning",
        "log_format": "kv",
        "max_payload": 4096,
        "buffer_size": 1000,
        "retention_days": 7.0,
    }
    entries = [
        ("CP9", "in", time.monotonic(), '[2,"x1","Heartbeat",{}]', 0),
        ("CP9", "out", time.monotonic(), b'[3,"x1",{"currentTime":"2026-01-01T00:00:00Z"}]', 0),
    ]
    child = await start_child()
    assert child.stdin is not None and child.stdout is not None
    for message in (config, entries):
        blob = marshal.dumps(message)
        child.stdin.write(struct.pack("<I", len(blob)) + blob)
    async with asyncio.timeout(60):
        assert await child.stdout.readline() == b"ready\n"
        child.stdin.close()
        assert await child.wait() == 0

    store = open_store(url)
    try:
        frames = await SqlMessageLog(store).list_messages("CP9")
    finally:
        await store.close()
    assert [(f.direction, f.action, f.unique_id) for f in frames] == [
        ("out", "Heartbeat", "x1"),
        ("in", "Heartbeat", "x1"),
    ]


def test_where_the_log_is_written() -> None:
    sqlite = {"database_url": "sqlite:////srv/kw/kilowatt.db"}
    # Its own process: a file of its own beside the database's.
    assert load_settings(**sqlite).message_log_url == "sqlite:////srv/kw/kilowatt-messages.db"
    # The server's process: its own SQLite writer shares the main file fairly.
    inline = load_settings(**sqlite, message_log_process=False)
    assert inline.message_log_url == "sqlite:////srv/kw/kilowatt.db"
    postgres = "postgresql+asyncpg://kw:secret@db/kw"
    assert load_settings(database_url=postgres).message_log_url == postgres
    memory = load_settings(database_url="sqlite://")
    assert memory.message_log_url == "sqlite://"
    chosen = load_settings(**sqlite, message_log_database_url="sqlite:////var/log/kw.db")
    assert chosen.message_log_url == "sqlite:////var/log/kw.db"


# --------------------------------------------------------- MessageLog alone


class MemoryStore:
    """An in-memory MessageLogStore that can be told to fail."""

    def __init__(self) -> None:
        self.rows: list[FrameRow] = []
        self.failures = 0
        self.inserts = 0

    async def insert(self, rows: Sequence[FrameRow]) -> None:
        if self.failures:
            self.failures -= 1
            raise ConnectionError("database unavailable")
        self.inserts += 1
        self.rows.extend(rows)

    async def list_messages(self, charge_point_id: str, **filters: Any) -> list[LoggedFrame]:
        raise NotImplementedError

    async def purge(self, before: datetime) -> int:
        return 0

    async def prepare(self) -> None:
        return None


def _memory_log(**options: Any) -> tuple[MessageLog, MemoryStore, FakeClock]:
    store = MemoryStore()
    clock = FakeClock()
    return MessageLog(store, clock, **options), store, clock


async def test_results_take_the_action_of_the_call_they_answer() -> None:
    log, store, _ = _memory_log()
    log.frame_sent("CP1", b'[2,"c1","Reset",{"type":"Soft"}]')
    log.frame_received("CP2", '[3,"c1",{}]')  # another charge point: not an answer
    log.frame_received("CP1", '[2,"c1","Heartbeat",{}]')  # same id, other direction
    log.frame_received("CP1", '[3,"c1",{"status":"Accepted"}]')
    log.frame_sent("CP1", b'[4,"c1","NotImplemented","",{}]')
    await log.flush()
    assert [(r.charge_point_id, r.direction, r.message_type, r.action) for r in store.rows] == [
        ("CP1", "out", 2, "Reset"),
        ("CP2", "in", 3, None),
        ("CP1", "in", 2, "Heartbeat"),
        ("CP1", "in", 3, "Reset"),
        ("CP1", "out", 4, "Heartbeat"),
    ]


async def test_frames_are_cut_to_the_byte() -> None:
    log, store, _ = _memory_log(max_payload=64)
    ascii_frame = '[2,"a","DataTransfer",{"vendorId":"x","data":"' + "x" * 200 + '"}]'
    wide_frame = '[2,"b","DataTransfer",{"vendorId":"x","data":"' + "€" * 20 + '"}]'  # 3 bytes
    log.frame_received("CP1", ascii_frame)
    log.frame_received("CP1", wide_frame)  # fewer characters than the cap, more bytes
    log.frame_sent("CP1", b"[3," + b'"c",' + b"{" * 100 + b"}")
    log.frame_received("CP1", b"\x00\xff binary")
    log.frame_received("CP1", '[2,"n","Heartbeat",{"x":"\x00"}]')
    await log.flush()

    a, b, c, binary, nul = store.rows
    assert (a.truncated, a.size, a.frame) == (True, len(ascii_frame), ascii_frame[:64])
    assert a.action == "DataTransfer"
    wide = wide_frame.encode()
    assert (b.truncated, b.size) == (True, len(wide))
    assert 62 <= len(b.frame.encode()) <= 64  # never half a character
    assert wide.decode().startswith(b.frame)
    assert (c.truncated, c.size, len(c.frame)) == (True, 108, 64)
    assert (binary.truncated, binary.message_type) == (False, None)
    assert "\x00" not in binary.frame and "\x00" not in nul.frame
    assert nul.action == "Heartbeat"


async def test_a_binary_frame_that_grows_when_decoded_still_fits() -> None:
    log, store, _ = _memory_log(max_payload=64)
    log.frame_received("CP1", b"\xff" * 64)  # 64 bytes, each one U+FFFD (3 bytes) as text
    await log.flush()
    (row,) = store.rows
    assert (row.size, row.truncated) == (64, True)
    assert row.frame == "\ufffd" * 21  # 63 bytes


async def test_a_batch_that_cannot_be_prepared_is_dropped_and_logged(
    caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    log, store, _ = _memory_log()

    def broken(*args: Any) -> list[FrameRow]:
        raise RuntimeError("a bug")

    monkeypatch.setattr(log, "_prepare", broken)
    log.frame_received("CP1", '[2,"1","Heartbeat",{}]')
    with caplog.at_level("WARNING", logger="kilowatt.message_log"):
        assert await log.flush() == 0
    assert log.dropped == 1
    assert store.inserts == 0
    assert "could not prepare" in caplog.text


async def test_a_full_buffer_drops_the_oldest_and_warns(
    caplog: pytest.LogCaptureFixture,
) -> None:
    log, store, _ = _memory_log(buffer_size=100)
    for n in range(130):
        log.frame_received("CP1", f'[2,"{n}","Heartbeat",{{}}]')
    assert log.dropped == 30
    with caplog.at_level("WARNING", logger="kilowatt.message_log"):
        await log.flush()
    assert [row.unique_id for row in store.rows] == [str(n) for n in range(30, 130)]
    warnings = [r for r in caplog.records if "dropped" in r.getMessage()]
    assert len(warnings) == 1
    assert warnings[0].dropped == 30  # type: ignore[attr-defined]


async def test_rows_the_database_refused_are_written_later() -> None:
    log, store, _ = _memory_log(buffer_size=100)
    store.failures = 2
    log.frame_received("CP1", '[2,"1","Heartbeat",{}]')
    with pytest.raises(ConnectionError):
        await log.flush()
    log.frame_received("CP1", '[2,"2","Heartbeat",{}]')
    with pytest.raises(ConnectionError):
        await log.flush()
    log.frame_received("CP1", '[2,"3","Heartbeat",{}]')
    assert await log.flush() == 3
    assert [row.unique_id for row in store.rows] == ["1", "2", "3"]
    assert log.dropped == 0


async def test_rows_kept_for_a_retry_stay_within_the_buffer_bound() -> None:
    log, store, _ = _memory_log(buffer_size=100)
    store.failures = 1
    for n in range(80):
        log.frame_received("CP1", f'[2,"a{n}","Heartbeat",{{}}]')
    with pytest.raises(ConnectionError):
        await log.flush()
    for n in range(50):
        log.frame_received("CP1", f'[2,"b{n}","Heartbeat",{{}}]')
    await log.flush()
    assert len(store.rows) == 100
    assert log.dropped == 30
    assert store.rows[0].unique_id == "a30"  # the oldest went


async def test_times_come_from_the_clock() -> None:
    log, store, clock = _memory_log()
    start = clock.now()
    log.frame_received("CP1", '[2,"1","Heartbeat",{}]')
    clock.advance(1.5)
    log.frame_sent("CP1", b'[3,"1",{}]')
    clock.advance(10)
    await log.flush()
    assert [row.logged_at for row in store.rows] == [start, start + timedelta(seconds=1.5)]


# ----------------------------------------------------- SQL on both engines


def _row(charge_point_id: str, n: int, at: datetime, direction: str = "in") -> FrameRow:
    return FrameRow(
        charge_point_id=charge_point_id,
        direction=direction,
        logged_at=at,
        message_type=2,
        unique_id=str(n),
        action="Heartbeat" if n % 2 else "StatusNotification",
        frame=f'[2,"{n}","Heartbeat",{{}}]',
        size=20,
        truncated=False,
    )


async def test_sql_store_lists_and_purges_in_batches(engine_url: str) -> None:
    store = open_store(engine_url)
    try:
        await upgrade(store)
        sql = SqlMessageLog(store, purge_batch=3)
        start = datetime(2026, 1, 1, tzinfo=UTC)
        # Rows come in the order they were logged (ids grow with time).
        await sql.insert(
            [_row("CP2", 100, start)]
            + [_row("CP1", n, start + timedelta(hours=n)) for n in range(10)]
        )
        await sql.insert([])
        listed = await sql.list_messages("CP1", limit=4)
        assert [f.unique_id for f in listed] == ["9", "8", "7", "6"]
        assert listed[0].logged_at == start + timedelta(hours=9)
        older = await sql.list_messages("CP1", before_id=listed[-1].id, action="Heartbeat")
        assert [f.unique_id for f in older] == ["5", "3", "1"]
        assert await sql.list_messages("CP1", direction="out") == []

        # Everything before 07:00 goes (CP2's row included), in batches of 3.
        assert await sql.purge(start + timedelta(hours=7)) == 8
        assert [f.unique_id for f in await sql.list_messages("CP1")] == ["9", "8", "7"]
        assert await sql.list_messages("CP2") == []
        assert await sql.purge(start + timedelta(days=30)) == 3
        assert await sql.purge(start + timedelta(days=30)) == 0
    finally:
        await store.close()


async def test_sql_insert_lets_ocpp_writes_run_between_its_chunks(engine_url: str) -> None:
    # A second's worth of frames under load is thousands of rows: written as one
    # transaction it would hold the answers of every message queued meanwhile.
    store = open_store(engine_url)
    events: list[str] = []

    class Recording:
        async def run_sync_admin(self, function: Any, *, durable: bool = True) -> Any:
            result = await store.run_sync_admin(function, durable=durable)
            # A diagnostic log: its chunks are not waited to disk.
            events.append("durable chunk" if durable else "chunk")
            return result

    try:
        await upgrade(store)
        sql = SqlMessageLog(cast(SqlStore, Recording()), insert_chunk=2)
        start = datetime(2026, 1, 1, tzinfo=UTC)
        insert = asyncio.create_task(sql.insert([_row("CP1", n, start) for n in range(6)]))
        await asyncio.sleep(0)  # the first chunk is queued

        async def ocpp_write() -> None:
            await store.write(lambda repos: None)
            events.append("write")

        await asyncio.gather(insert, ocpp_write())
        assert events.count("chunk") == 3
        if engine_url.startswith("sqlite"):
            # One writer, first come first served: the OCPP write queued during the
            # first chunk commits with or before the second chunk, not after the
            # last. (PostgreSQL writes the log on a connection of its own.)
            assert events.index("write") <= 2
        stored = await SqlMessageLog(store).list_messages("CP1")
        assert sorted(f.unique_id for f in stored) == [str(n) for n in range(6)]
    finally:
        await store.close()


async def test_the_log_process_writes_a_flush_in_one_transaction(engine_url: str) -> None:
    # The child's database has no other writer to let in between chunks: every
    # chunk would only add a commit.
    store = open_store(engine_url)
    transactions = 0

    class Counting:
        async def run_sync_admin(self, function: Any, *, durable: bool = True) -> Any:
            nonlocal transactions
            transactions += 1
            return await store.run_sync_admin(function, durable=durable)

    try:
        await upgrade(store)
        sql = child_log_store(cast(SqlStore, Counting()))
        start = datetime(2026, 1, 1, tzinfo=UTC)
        await sql.insert([_row("CP1", n, start) for n in range(1000)])
        assert transactions == 1
        stored = await SqlMessageLog(store).list_messages("CP1", limit=2000)
        assert len(stored) == 1000
        await sql.insert([])
        assert transactions == 1
    finally:
        await store.close()


async def test_sql_reads_do_not_queue_behind_the_writer(
    engine_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    # An operator paging through the log must not take turns with OCPP group commits.
    store = open_store(engine_url)
    try:
        await upgrade(store)
        sql = SqlMessageLog(store)
        await sql.insert([_row("CP1", n, datetime(2026, 1, 1, tzinfo=UTC)) for n in range(3)])

        async def no_writer(function: Any) -> Any:
            raise AssertionError("a read went through the writer")

        monkeypatch.setattr(store, "run_sync_admin", no_writer)
        assert len(await sql.list_messages("CP1")) == 3
    finally:
        await store.close()


async def test_a_large_flush_is_prepared_on_the_loop_a_slice_at_a_time() -> None:
    # Thousands of frames a second: their preparation must not hold the loop (or, on
    # a thread, the GIL) for the whole batch.
    log, store, _ = _memory_log()
    events: list[str] = []
    prepare = log._prepare

    def recording(batch: Any, base: Any) -> list[FrameRow]:
        events.append("slice")
        return prepare(batch, base)

    log._prepare = recording  # type: ignore[method-assign]
    for n in range(3 * PREPARE_SLICE):
        log.frame_received("CP1", f'[2,"{n}","Heartbeat",{{}}]')

    async def other_charge_points() -> None:
        while True:
            events.append("loop")
            await asyncio.sleep(0)

    ticker = asyncio.ensure_future(other_charge_points())
    await asyncio.sleep(0)
    try:
        assert await log.flush() == 3 * PREPARE_SLICE
    finally:
        ticker.cancel()
    slices = [index for index, event in enumerate(events) if event == "slice"]
    assert len(slices) == 3
    assert "loop" in events[slices[0] : slices[1]] and "loop" in events[slices[1] : slices[2]]
    assert [row.unique_id for row in store.rows] == [str(n) for n in range(3 * PREPARE_SLICE)]
