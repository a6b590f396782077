"""One simulated OCPP 1.6 charge point: its connectors, its drivers, and its answers.

Life cycle (:meth:`SimulatedChargePoint.run`): connect (retrying with back-off), send
BootNotification until Accepted, report the status of connector 0 and of every
connector, then run one task per connector and a heartbeat until the connection
drops, a Reset arrives or the simulation stops. Transactions survive a lost
connection (charging goes on, StopTransaction is kept until the next boot); a
Reset stops them (``SoftReset`` before disconnecting, ``HardReset`` sent after the
reboot) and reboots.

A connector's task plays the drivers: an EV arrives after an idle time, its driver
presents an id tag (Authorize unless the local list or the authorization cache
already accepts it), StartTransaction, MeterValues every MeterValueSampleInterval
(energy register, power, state of charge, as configured), and after the session
time StopTransaction (reason ``Local`` with the id tag, or ``EVDisconnected``). Some
EVs (``remote_start_only``) only plug in and wait for a RemoteStartTransaction.
The power follows the EV (its maximum, tapering above 80 % state of charge) and the
charging profiles in force (:mod:`kilowatt.simulator.smart_charging`).

Every CS→CP action of OCPP 1.6 and of its Security Whitepaper is answered, see
``_handlers``; what an answer promises (a status notification, a session, a reboot,
firmware progress) happens after the answer is sent.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import itertools
import logging
import random
from collections import deque
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import orjson

from kilowatt.domain.timestamps import parse_timestamp
from kilowatt.simulator.keys import ConfigurationKeys
from kilowatt.simulator.scenario import Scenario, sample
from kilowatt.simulator.smart_charging import SmartCharging
from kilowatt.simulator.stats import SimulationStats
from kilowatt.simulator.transport import Link, LinkError, TransportKind, connect

__all__ = [
    "CallRefused",
    "CallTimedOut",
    "Connector",
    "Offline",
    "SimulatedChargePoint",
    "SimulatorCallFailed",
]

log = logging.getLogger("kilowatt.simulator")

CALL, CALLRESULT, CALLERROR = 2, 3, 4
RECONNECT_MIN = 1.0
RECONNECT_MAX = 30.0
BOOT_RETRY_MAX = 60.0
RETRY_PAUSE = 1.0
CLOSE_TIMEOUT = 5.0
FINISHING_SECONDS = 1.0
STEP_SECONDS = 1.0  # firmware, diagnostics and log uploads: one step per second

Then = list[Callable[[], Awaitable[None]]]
Handler = Callable[[dict[str, Any], Then], Awaitable[dict[str, Any]]]


class SimulatorCallFailed(Exception):
    """A CALL of the simulated charge point got no CALLRESULT."""


class Offline(SimulatorCallFailed):
    """No connection (or it closed while waiting)."""


class CallTimedOut(SimulatorCallFailed):
    """No answer in time."""


class CallRefused(SimulatorCallFailed):
    """The Central System answered CALLERROR."""

    def __init__(self, code: str, description: str) -> None:
        super().__init__(f"{code}: {description}")
        self.code = code


class _BadRequest(Exception):
    def __init__(self, code: str, description: str) -> None:
        super().__init__(description)
        self.code = code


def now_iso() -> str:
    """OCPP dateTime, UTC, milliseconds."""
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "Z"


@dataclass(slots=True)
class Reservation:
    id: int
    id_tag: str
    expiry: datetime
    arrival: float | None = None  # loop time the driver turns up, drawn when reserved


@dataclass(slots=True)
class RemoteStart:
    id_tag: str
    profile: dict[str, Any] | None


async def _sleep_unless(event: asyncio.Event, seconds: float) -> bool:
    if event.is_set():
        return True
    try:
        async with asyncio.timeout(seconds):
            await event.wait()
    except TimeoutError:
        return False
    return True


class Connector:
    """The state of one connector; its task reads and changes it."""

    def __init__(self, connector_id: int, meter_wh: float) -> None:
        self.id = connector_id
        self.status: str | None = None  # last reported
        self.available = True
        self.pending_available: bool | None = None  # ChangeAvailability "Scheduled"
        self.plugged_until: float | None = None  # an EV waiting for a remote start
        self.remote_start: RemoteStart | None = None
        self.starting = False  # a driver is at the connector, starting a session
        self.reservation: Reservation | None = None
        self.transaction_id: int | None = None
        self.id_tag: str | None = None
        self.started_at: datetime | None = None
        self.stop_reason: str | None = None
        self.end_reason = "Local"
        self.session_end = 0.0
        self.meter_wh = meter_wh
        self.battery_wh = 60_000.0
        self.soc = 50.0
        self.ev_max_w = 11_000.0
        self.power_w = 0.0
        self.limit_w: float | None = None
        self.energy_at = 0.0
        self.last_sample = 0.0
        self.wake = asyncio.Event()

    def poke(self) -> None:
        self.wake.set()


class SimulatedChargePoint:
    """See the module docstring. ``run()`` until ``stop()``."""

    def __init__(
        self,
        charge_point_id: str,
        url: str,
        *,
        scenario: Scenario,
        connectors: int,
        stats: SimulationStats,
        rng: random.Random,
        password: str | None = None,
        call_timeout: float = 30.0,
        connect_timeout: float = 10.0,
        transport: TransportKind = "auto",
        connect_slots: asyncio.Semaphore | None = None,
    ) -> None:
        self.id = charge_point_id
        self.url = url
        self.scenario = scenario
        self.stats = stats
        self.rng = rng
        self.password = password
        self.call_timeout = call_timeout
        self.connect_timeout = connect_timeout
        self.transport = transport
        self._slots = connect_slots
        self.connectors = [
            Connector(i, float(rng.randrange(1_000, 5_000_000))) for i in range(1, connectors + 1)
        ]
        self.keys = ConfigurationKeys(scenario, connectors, on_change=self._key_changed)
        self.smart = SmartCharging(connectors, voltage=scenario.voltage, phases=scenario.phases)
        self.local_list_version = 0
        self.local_list: dict[str, dict[str, Any]] = {}
        self.auth_cache: dict[str, dict[str, Any]] = {}
        self.certificates: dict[str, list[dict[str, str]]] = {}
        self.firmware_version = scenario.firmware_version
        self.firmware_status = "Idle"
        self.diagnostics_status = "Idle"
        self.log_status = "Idle"
        self.booted = False
        self.boots = 0
        self.resets: list[str] = []
        self._link: Link | None = None
        self._generation = 0
        self._pending: dict[str, asyncio.Future[dict[str, Any]]] = {}
        self._ids = itertools.count(1)
        self._send_lock = asyncio.Lock()
        self._tasks: set[asyncio.Task[Any]] = set()
        self._leave = asyncio.Event()  # the online phase ends (closed, reset, stop)
        self._stop_event = asyncio.Event()
        self._heartbeat_wake = asyncio.Event()
        self._queued: deque[tuple[str, dict[str, Any]]] = deque()
        self._reset: str | None = None
        self._stopping = False
        self._handlers: dict[str, Handler] = {
            "CancelReservation": self._cancel_reservation,
            "CertificateSigned": self._certificate_signed,
            "ChangeAvailability": self._change_availability,
            "ChangeConfiguration": self._change_configuration,
            "ClearCache": self._clear_cache,
            "ClearChargingProfile": self._clear_charging_profile,
            "DataTransfer": self._data_transfer,
            "DeleteCertificate": self._delete_certificate,
            "ExtendedTriggerMessage": self._extended_trigger_message,
            "GetCompositeSchedule": self._get_composite_schedule,
            "GetConfiguration": self._get_configuration,
            "GetDiagnostics": self._get_diagnostics,
            "GetInstalledCertificateIds": self._get_installed_certificate_ids,
            "GetLocalListVersion": self._get_local_list_version,
            "GetLog": self._get_log,
            "InstallCertificate": self._install_certificate,
            "RemoteStartTransaction": self._remote_start,
            "RemoteStopTransaction": self._remote_stop,
            "ReserveNow": self._reserve_now,
            "Reset": self._reset_request,
            "SendLocalList": self._send_local_list,
            "SetChargingProfile": self._set_charging_profile,
            "SignedUpdateFirmware": self._signed_update_firmware,
            "TriggerMessage": self._trigger_message,
            "UnlockConnector": self._unlock_connector,
            "UpdateFirmware": self._update_firmware,
        }

    @property
    def actions(self) -> frozenset[str]:
        """The CS→CP actions this charge point answers."""
        return frozenset(self._handlers)

    @property
    def connected(self) -> bool:
        return self._link is not None and not self._link.closed

    def connector(self, connector_id: int) -> Connector:
        return self.connectors[connector_id - 1]

    # ============================================================ life cycle

    def stop(self) -> None:
        """End :meth:`run`: transactions are stopped (reason ``Other``), then the
        connection is closed."""
        self._stopping = True
        self._stop_event.set()
        self._leave.set()

    async def run(self) -> None:
        try:
            await self._life()
        finally:
            await self._cancel_tasks()

    async def _life(self) -> None:
        failures = 0
        first = True
        while not self._stopping:
            link = await self._connect()
            if link is None:
                failures += 1
                delay = min(RECONNECT_MAX, RECONNECT_MIN * 2 ** min(failures, 6))
                await self._sleep(delay * (0.5 + self.rng.random()))
                continue
            failures = 0
            if not first and self._reset is None:
                self.stats.reconnects += 1
            first = False
            self._reset = None
            await self._online(link)
            await self._offline(link)

    async def _connect(self) -> Link | None:
        self._leave.clear()
        generation = self._generation = self._generation + 1
        slots = self._slots or contextlib.nullcontext()
        try:
            async with slots:
                if self._stopping:
                    return None
                link = await connect(
                    self.url,
                    self.id,
                    password=self.password,
                    on_message=self._on_message,
                    on_close=lambda: self._closed(generation),
                    timeout=self.connect_timeout,
                    kind=self.transport,
                )
        except LinkError as exc:
            self.stats.error("connect_failed", f"{self.id}: {exc}")
            return None
        self._link = link
        self.stats.connected += 1
        if link.closed:  # it went away while we were looking
            self._closed(generation)
        return link

    def _closed(self, generation: int) -> None:
        if generation != self._generation or self._link is None:
            return
        self._link = None
        self.booted = False
        self.stats.connected -= 1
        for future in self._pending.values():
            if not future.done():
                future.set_exception(Offline("the connection closed"))
        if not self._stopping and self._reset is None:
            self.stats.error("disconnect", f"{self.id}: the connection closed")
        self._leave.set()

    async def _pause(self, seconds: float) -> bool:
        """Sleep; True (early) when the online phase ends."""
        return await _sleep_unless(self._leave, seconds)

    async def _sleep(self, seconds: float) -> bool:
        """Sleep; True (early) when the simulation stops."""
        return await _sleep_unless(self._stop_event, seconds)

    async def _online(self, link: Link) -> None:
        try:
            if not await self._boot():
                return
            await self._send_queued()
            await self._report_statuses()
            self._spawn(self._heartbeats())
            for connector in self.connectors:
                self._spawn(self._connector_task(connector))
            await self._leave.wait()
        except Offline:
            pass
        finally:
            await self._cancel_tasks()

    async def _offline(self, link: Link) -> None:
        """After the online phase: a stop, a reset, or a lost connection."""
        reset = self._reset
        if self._stopping:
            if self.connected and self.booted:
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(self.call_timeout):
                        await self._stop_all("Other")
            await link.close(CLOSE_TIMEOUT)
            return
        if reset == "Soft":
            if self.connected:
                await self._stop_all("SoftReset")
            await link.close(CLOSE_TIMEOUT)
        elif reset == "Hard":
            await self._stop_all("HardReset")
            link.abort()
        else:
            link.abort()
            await self._sleep(RECONNECT_MIN * (1 + self.rng.random()))
            return
        self._closed(self._generation)
        self.stats.reboots += 1
        await self._sleep(self.scenario.reboot_seconds)
        self._reboot()

    def _reboot(self) -> None:
        """What a power cycle forgets (availability and profiles are kept)."""
        self.booted = False
        for connector in self.connectors:
            connector.status = None
            connector.plugged_until = None
            connector.remote_start = None
            connector.reservation = None
            connector.stop_reason = None
            if connector.pending_available is not None:
                connector.available = connector.pending_available
                connector.pending_available = None

    def _spawn(self, coroutine: Awaitable[Any]) -> None:
        task: asyncio.Task[Any] = asyncio.ensure_future(coroutine)
        self._tasks.add(task)
        task.add_done_callback(self._task_done)

    def _task_done(self, task: asyncio.Task[Any]) -> None:
        self._tasks.discard(task)
        if task.cancelled():
            return
        exc = task.exception()
        if exc is not None and not isinstance(exc, Offline):
            self.stats.error("internal", f"{self.id}: {exc!r}")
            log.error("simulated charge point failed", exc_info=exc, extra={"cp": self.id})

    async def _cancel_tasks(self) -> None:
        tasks = list(self._tasks)
        for task in tasks:
            task.cancel()
        if tasks:
            await asyncio.gather(*tasks, return_exceptions=True)

    # ================================================================ OCPP-J

    async def _send(self, data: bytes) -> None:
        link = self._link
        if link is None:
            raise Offline("not connected")
        try:
            await link.send(data)
        except LinkError as exc:
            raise Offline(str(exc)) from None
        self.stats.messages_sent += 1

    async def call(
        self, action: str, payload: dict[str, Any], *, timeout: float | None = None
    ) -> dict[str, Any]:
        """Send a CALL (one at a time) and return the CALLRESULT payload."""
        async with self._send_lock:
            if self._link is None:
                raise Offline("not connected")
            unique_id = str(next(self._ids))
            future: asyncio.Future[dict[str, Any]] = asyncio.get_running_loop().create_future()
            self._pending[unique_id] = future
            try:
                await self._send(orjson.dumps([CALL, unique_id, action, payload]))
                sent = self.stats.calls_sent
                sent[action] = sent.get(action, 0) + 1
                async with asyncio.timeout(timeout or self.call_timeout):
                    return await future
            except TimeoutError:
                self.stats.error("timeout", f"{self.id}: {action}: no answer")
                raise CallTimedOut(action) from None
            except CallRefused as exc:
                self.stats.error("callerror", f"{self.id}: {action}: {exc}")
                raise
            finally:
                del self._pending[unique_id]

    def _on_message(self, data: bytes | str) -> None:
        self.stats.messages_received += 1
        try:
            message = orjson.loads(data)
        except orjson.JSONDecodeError:
            self.stats.error("protocol", f"{self.id}: not JSON: {data[:80]!r}")
            return
        if not isinstance(message, list) or len(message) < 3 or not isinstance(message[1], str):
            self.stats.error("protocol", f"{self.id}: not an OCPP-J frame: {data[:80]!r}")
            return
        kind, unique_id = message[0], message[1]
        if kind == CALL:
            if len(message) != 4 or not isinstance(message[2], str):
                self.stats.error("protocol", f"{self.id}: malformed CALL: {data[:80]!r}")
                return
            payload = message[3] if isinstance(message[3], dict) else {}
            self._spawn(self._answer(unique_id, message[2], payload))
            return
        future = self._pending.get(unique_id)
        if future is None or future.done():
            return  # late: its CALL timed out
        if kind == CALLRESULT and isinstance(message[2], dict):
            future.set_result(message[2])
        elif kind == CALLERROR:
            code = str(message[2])
            description = str(message[3]) if len(message) > 3 else ""
            future.set_exception(CallRefused(code, description))
        else:
            self.stats.error("protocol", f"{self.id}: unexpected frame: {data[:80]!r}")

    async def _answer(self, unique_id: str, action: str, payload: dict[str, Any]) -> None:
        handler = self._handlers.get(action)
        then: Then = []
        if handler is None:
            frame = [CALLERROR, unique_id, "NotImplemented", f"{action} is unknown", {}]
        else:
            try:
                result = await handler(payload, then)
            except _BadRequest as exc:
                frame = [CALLERROR, unique_id, exc.code, str(exc), {}]
                then = []
            except (KeyError, TypeError, ValueError) as exc:
                frame = [CALLERROR, unique_id, "FormationViolation", repr(exc), {}]
                then = []
            except Exception as exc:
                self.stats.error("internal", f"{self.id}: {action}: {exc!r}")
                log.exception("simulated handler failed", extra={"cp": self.id, "action": action})
                frame = [CALLERROR, unique_id, "InternalError", f"{action} failed", {}]
                then = []
            else:
                frame = [CALLRESULT, unique_id, result]
                answered = self.stats.calls_answered
                answered[action] = answered.get(action, 0) + 1
        await self._send(orjson.dumps(frame))
        for step in then:
            await step()

    # ========================================================== boot, status

    async def _boot(self) -> bool:
        while True:
            try:
                answer = await self._send_boot()
            except (CallTimedOut, CallRefused):
                if await self._pause(RETRY_PAUSE * 5):
                    return False
                continue
            interval = answer.get("interval")
            if answer.get("status") == "Accepted":
                self.booted = True
                self.boots += 1
                self.stats.boots += 1
                return True
            wait = float(interval) if isinstance(interval, int) and interval > 0 else 10.0
            if await self._pause(min(wait, BOOT_RETRY_MAX)):
                return False

    async def _send_boot(self) -> dict[str, Any]:
        scenario = self.scenario
        answer = await self.call(
            "BootNotification",
            {
                "chargePointVendor": scenario.vendor,
                "chargePointModel": scenario.model,
                "chargePointSerialNumber": self.id[-25:],
                "firmwareVersion": self.firmware_version,
                "meterType": "SimMeter",
            },
        )
        interval = answer.get("interval")
        if answer.get("status") == "Accepted" and isinstance(interval, int) and interval > 0:
            self.keys.set("HeartbeatInterval", str(interval))
            self._heartbeat_wake.set()
        return answer

    async def _report_statuses(self) -> None:
        await self._status_zero()
        for connector in self.connectors:
            connector.status = None
            await self._set_status(connector, self._status_of(connector))

    async def _status_zero(self) -> None:
        operative = any(c.available for c in self.connectors)
        await self._status_call(0, "Available" if operative else "Unavailable")

    async def _status_call(self, connector_id: int, status: str) -> None:
        payload = {
            "connectorId": connector_id,
            "errorCode": "NoError",
            "status": status,
            "timestamp": now_iso(),
        }
        with contextlib.suppress(CallTimedOut, CallRefused):
            await self.call("StatusNotification", payload)

    async def _set_status(self, connector: Connector, status: str) -> None:
        if connector.status == status:
            return
        connector.status = status
        await self._status_call(connector.id, status)

    def _status_of(self, connector: Connector) -> str:
        if connector.transaction_id is not None:
            return self._charging_status(connector)
        if not connector.available:
            return "Unavailable"
        if connector.reservation is not None:
            return "Reserved"
        if connector.plugged_until is not None:
            return "Preparing"
        return "Available"

    async def _heartbeats(self) -> None:
        while True:
            self._heartbeat_wake.clear()
            interval = max(self.keys.integer("HeartbeatInterval"), 1)
            try:
                async with asyncio.timeout(interval):
                    await self._heartbeat_wake.wait()
                continue  # the interval changed
            except TimeoutError:
                pass
            with contextlib.suppress(CallTimedOut, CallRefused):
                await self.call("Heartbeat", {})

    async def _send_queued(self) -> None:
        """Transaction messages kept while offline, oldest first."""
        while self._queued:
            action, payload = self._queued[0]
            with contextlib.suppress(CallTimedOut, CallRefused):
                await self.call(action, payload)
            self._queued.popleft()

    def _key_changed(self, key: str) -> None:
        if key == "HeartbeatInterval":
            self._heartbeat_wake.set()
        elif key in ("MeterValueSampleInterval", "MeterValuesSampledData"):
            for connector in self.connectors:
                connector.poke()

    # ============================================================ connectors

    async def _wait(self, connector: Connector, seconds: float | None) -> bool:
        """Sleep ``seconds`` (None: until woken); True when woken early."""
        wake = connector.wake
        if not wake.is_set():
            try:
                async with asyncio.timeout(seconds if seconds is None else max(seconds, 0)):
                    await wake.wait()
            except TimeoutError:
                return False
        wake.clear()
        return True

    async def _connector_task(self, connector: Connector) -> None:
        while True:
            try:
                await self._connector_step(connector)
            except (CallTimedOut, CallRefused):
                await asyncio.sleep(RETRY_PAUSE)

    async def _connector_step(self, c: Connector) -> None:
        loop = asyncio.get_running_loop()
        if c.transaction_id is not None:
            await self._charge(c)
            return
        if not c.available:
            await self._set_status(c, "Unavailable")
            await self._wait(c, None)
            return
        if c.remote_start is not None:
            request, c.remote_start = c.remote_start, None
            await self._begin_remote(c, request)
            return
        if c.reservation is not None:
            await self._reserved(c)
            return
        if c.plugged_until is not None:
            await self._set_status(c, "Preparing")
            remaining = c.plugged_until - loop.time()
            expired = remaining <= 0 or not await self._wait(c, remaining)
            if expired and c.remote_start is None and c.transaction_id is None:
                c.plugged_until = None  # nobody started it: the driver leaves
            return
        await self._set_status(c, "Available")
        if await self._wait(c, sample(self.rng, self.scenario.idle_seconds)):
            return
        # An EV arrives.
        if self.rng.random() < self.scenario.remote_start_only:
            c.plugged_until = loop.time() + self.keys.integer("ConnectionTimeOut")
            return
        await self._begin_local(c, self._id_tag(c))

    def _id_tag(self, c: Connector) -> str:
        tags = self.scenario.id_tags
        if tags:
            return self.rng.choice(tags)
        return f"{self.id}C{c.id}"[-20:]

    async def _reserved(self, c: Connector) -> None:
        reservation = c.reservation
        assert reservation is not None
        await self._set_status(c, "Reserved")
        loop = asyncio.get_running_loop()
        until_expiry = (reservation.expiry - datetime.now(UTC)).total_seconds()
        if until_expiry <= 0:
            c.reservation = None
            return
        if reservation.arrival is None:
            reservation.arrival = loop.time() + sample(self.rng, self.scenario.idle_seconds)
        if await self._wait(c, min(until_expiry, reservation.arrival - loop.time())):
            return
        if c.reservation is reservation and loop.time() >= reservation.arrival:
            c.reservation = None
            await self._begin_local(c, reservation.id_tag, reservation_id=reservation.id)

    def _locally_accepted(self, id_tag: str) -> bool:
        if not self.keys.boolean("LocalPreAuthorize"):
            return False
        if self.keys.boolean("LocalAuthListEnabled"):
            entry = self.local_list.get(id_tag)
            if entry is not None:
                return entry.get("status") == "Accepted"
        if self.keys.boolean("AuthorizationCacheEnabled"):
            cached = self.auth_cache.get(id_tag)
            return cached is not None and cached.get("status") == "Accepted"
        return False

    def _remember(self, id_tag: str, info: dict[str, Any]) -> None:
        if self.keys.boolean("AuthorizationCacheEnabled"):
            self.auth_cache[id_tag] = info

    async def _authorize(self, id_tag: str) -> bool:
        if self._locally_accepted(id_tag):
            return True
        answer = await self.call("Authorize", {"idTag": id_tag})
        info = answer.get("idTagInfo", {})
        self._remember(id_tag, info)
        if info.get("status") != "Accepted":
            self.stats.rejected += 1
            return False
        return True

    async def _begin_local(
        self, c: Connector, id_tag: str, *, reservation_id: int | None = None
    ) -> None:
        c.starting = True
        try:
            if self.scenario.authorize and not await self._authorize(id_tag):
                return
            await self._set_status(c, "Preparing")
            await self._start_transaction(c, id_tag, reservation_id=reservation_id, profile=None)
        finally:
            c.starting = False

    async def _begin_remote(self, c: Connector, request: RemoteStart) -> None:
        c.plugged_until = None
        if self.keys.boolean("AuthorizeRemoteTxRequests") and not await self._authorize(
            request.id_tag
        ):
            return
        reservation_id = None
        if c.reservation is not None and c.reservation.id_tag == request.id_tag:
            reservation_id = c.reservation.id
        c.reservation = None
        await self._set_status(c, "Preparing")
        await self._start_transaction(
            c, request.id_tag, reservation_id=reservation_id, profile=request.profile
        )

    async def _start_transaction(
        self,
        c: Connector,
        id_tag: str,
        *,
        reservation_id: int | None,
        profile: dict[str, Any] | None,
    ) -> None:
        scenario, rng = self.scenario, self.rng
        now = asyncio.get_running_loop().time()
        c.battery_wh = sample(rng, scenario.battery_wh) or 1.0
        c.soc = sample(rng, scenario.start_soc)
        c.ev_max_w = sample(rng, scenario.ev_max_power_w)
        c.session_end = now + sample(rng, scenario.session_seconds)
        c.end_reason = "Local" if rng.random() < scenario.local_stop else "EVDisconnected"
        c.energy_at = c.last_sample = now
        c.stop_reason = None
        payload: dict[str, Any] = {
            "connectorId": c.id,
            "idTag": id_tag,
            "meterStart": int(c.meter_wh),
            "timestamp": now_iso(),
        }
        if reservation_id is not None:
            payload["reservationId"] = reservation_id
        try:
            answer = await self.call("StartTransaction", payload)
        except SimulatorCallFailed:
            c.status = None  # report again whatever comes next
            raise
        c.transaction_id = int(answer["transactionId"])
        c.id_tag = id_tag
        c.started_at = datetime.now(UTC)
        self.stats.sessions_started += 1
        self.stats.charging += 1
        info = answer.get("idTagInfo", {})
        self._remember(id_tag, info)
        if profile is not None:
            self.smart.install(
                c.id,
                {**profile, "transactionId": c.transaction_id},
                transaction_id=c.transaction_id,
                now=c.started_at,
            )
        if info.get("status") != "Accepted":
            self.stats.rejected += 1
            if self.keys.boolean("StopTransactionOnInvalidId"):
                c.stop_reason = "DeAuthorized"
        self._integrate(c)

    # -------------------------------------------------------------- charging

    def _sharing(self) -> int:
        return sum(1 for c in self.connectors if c.transaction_id is not None)

    def _integrate(self, c: Connector) -> None:
        """Energy up to now at the power drawn since the last step; then the new power."""
        now = asyncio.get_running_loop().time()
        elapsed = now - c.energy_at
        if elapsed > 0 and c.power_w > 0:
            wh = c.power_w * elapsed / 3600.0
            c.meter_wh += wh
            c.soc = min(100.0, c.soc + wh / c.battery_wh * 100.0)
        c.energy_at = now
        c.limit_w = self.smart.limit_w(
            c.id,
            datetime.now(UTC),
            transaction_start=c.started_at,
            sharing=self._sharing(),
        )
        if c.transaction_id is None or c.soc >= 100.0:
            c.power_w = 0.0
            return
        power = min(self.scenario.max_power_w, c.ev_max_w)
        if c.soc > 80.0:  # the battery takes less as it fills up
            power *= max(0.1, (100.0 - c.soc) / 20.0)
        if c.limit_w is not None:
            power = min(power, c.limit_w)
        c.power_w = max(power, 0.0)

    def _charging_status(self, c: Connector) -> str:
        if c.power_w > 0:
            return "Charging"
        if c.limit_w is not None and c.limit_w <= 0 and c.soc < 100.0:
            return "SuspendedEVSE"
        return "SuspendedEV"

    async def _charge(self, c: Connector) -> None:
        loop = asyncio.get_running_loop()
        while c.stop_reason is None:
            now = loop.time()
            if now >= c.session_end:
                c.stop_reason = c.end_reason
                break
            self._integrate(c)
            await self._set_status(c, self._charging_status(c))
            interval = self.keys.integer("MeterValueSampleInterval")
            if interval > 0 and now >= c.last_sample + interval - 0.01:
                c.last_sample = now
                await self._meter_values(c, "Sample.Periodic")
            due = c.last_sample + interval if interval > 0 else c.session_end
            await self._wait(c, min(due, c.session_end) - loop.time())
        await self._stop_transaction(c, c.stop_reason)

    def _sampled(self, c: Connector, measurands: list[str], context: str) -> list[dict[str, Any]]:
        voltage, phases = self.scenario.voltage, self.scenario.phases
        offered = c.limit_w if c.limit_w is not None else self.scenario.max_power_w
        values: dict[str, tuple[str, str, str]] = {
            "Energy.Active.Import.Register": (f"{int(c.meter_wh)}", "Wh", "Outlet"),
            "Power.Active.Import": (f"{c.power_w:.1f}", "W", "Outlet"),
            "Power.Offered": (f"{offered:.1f}", "W", "Outlet"),
            "Current.Import": (f"{c.power_w / (voltage * phases):.1f}", "A", "Outlet"),
            "Current.Offered": (f"{offered / (voltage * phases):.1f}", "A", "Outlet"),
            "Voltage": (f"{voltage:.1f}", "V", "Outlet"),
            "SoC": (f"{c.soc:.0f}", "Percent", "EV"),
        }
        sampled = []
        for measurand in measurands:
            if measurand == "SoC" and c.transaction_id is None:
                continue  # no EV
            value, unit, location = values[measurand]
            sampled.append(
                {
                    "value": value,
                    "context": context,
                    "measurand": measurand,
                    "location": location,
                    "unit": unit,
                }
            )
        return sampled

    async def _meter_values(self, c: Connector, context: str) -> None:
        self._integrate(c)
        measurands = self.keys.items("MeterValuesSampledData") or ["Energy.Active.Import.Register"]
        payload: dict[str, Any] = {
            "connectorId": c.id,
            "meterValue": [
                {"timestamp": now_iso(), "sampledValue": self._sampled(c, measurands, context)}
            ],
        }
        if c.transaction_id is not None:
            payload["transactionId"] = c.transaction_id
        with contextlib.suppress(CallTimedOut, CallRefused):
            await self.call("MeterValues", payload)

    async def _stop_transaction(self, c: Connector, reason: str) -> None:
        self._integrate(c)
        transaction_id = c.transaction_id
        assert transaction_id is not None
        payload: dict[str, Any] = {
            "transactionId": transaction_id,
            "meterStop": int(c.meter_wh),
            "timestamp": now_iso(),
            "reason": reason,
        }
        if reason in ("Local", "DeAuthorized") and c.id_tag is not None:
            payload["idTag"] = c.id_tag
        end_data = self.keys.items("StopTxnSampledData")
        if end_data:
            sampled = self._sampled(c, end_data, "Transaction.End")
            payload["transactionData"] = [
                {"timestamp": payload["timestamp"], "sampledValue": sampled}
            ]
        c.transaction_id = None
        c.id_tag = None
        c.started_at = None
        c.stop_reason = None
        c.power_w = 0.0
        self.smart.end_transaction(c.id)
        self.stats.charging -= 1
        self.stats.sessions_completed += 1
        if reason == "HardReset":  # the charge point is gone: sent after the reboot
            self._queued.append(("StopTransaction", payload))
            return
        await self._transaction_message("StopTransaction", payload)
        if reason in ("SoftReset", "Other"):
            return  # going away; the statuses come with the next boot
        if c.pending_available is not None:
            c.available = c.pending_available
            c.pending_available = None
        if reason not in ("EVDisconnected", "UnlockCommand"):
            await self._set_status(c, "Finishing")
            await self._wait(c, FINISHING_SECONDS)  # the driver unplugs

    async def _transaction_message(self, action: str, payload: dict[str, Any]) -> None:
        """Delivered now, or kept for the next connection (never lost)."""
        try:
            await self.call(action, payload)
        except Offline:
            self._queued.append((action, payload))
        except asyncio.CancelledError:
            self._queued.append((action, payload))
            raise
        except (CallTimedOut, CallRefused):
            pass

    async def _stop_all(self, reason: str) -> None:
        for c in self.connectors:
            if c.transaction_id is not None:
                with contextlib.suppress(SimulatorCallFailed):
                    await self._stop_transaction(c, reason)

    # ====================================================== CS→CP: Core

    def _target(self, connector_id: Any) -> Connector | None:
        if isinstance(connector_id, int) and 1 <= connector_id <= len(self.connectors):
            return self.connectors[connector_id - 1]
        return None

    async def _remote_start(self, payload: dict[str, Any], then: Then) -> dict[str, Any]:
        id_tag = payload["idTag"]
        profile = payload.get("chargingProfile")
        if profile is not None and profile.get("chargingProfilePurpose") != "TxProfile":
            return {"status": "Rejected"}
        if "connectorId" in payload:
            c = self._target(payload["connectorId"])
            candidates = [c] if c is not None else []
        else:  # an EV already plugged in first, then any free connector
            candidates = sorted(self.connectors, key=lambda c: c.plugged_until is None)
        for c in candidates:
            free = (
                c.available
                and c.transaction_id is None
                and c.remote_start is None
                and not c.starting
                and (c.reservation is None or c.reservation.id_tag == id_tag)
            )
            if free:
                c.remote_start = RemoteStart(id_tag, profile)
                self.stats.remote_starts += 1
                then.append(self._poke(c))
                return {"status": "Accepted"}
        return {"status": "Rejected"}

    def _poke(self, *connectors: Connector) -> Callable[[], Awaitable[None]]:
        async def poke() -> None:
            for connector in connectors:
                connector.poke()

        return poke

    async def _remote_stop(self, payload: dict[str, Any], then: Then) -> dict[str, Any]:
        for c in self.connectors:
            if c.transaction_id == payload["transactionId"]:
                c.stop_reason = "Remote"
                then.append(self._poke(c))
                return {"status": "Accepted"}
        return {"status": "Rejected"}

    async def _reset_request(self, payload: dict[str, Any], then: Then) -> dict[str, Any]:
        kind = payload["type"]

        async def reset() -> None:
            self.resets.append(kind)
            self._reset = kind
            self._leave.set()

        then.append(reset)
        return {"status": "Accepted"}

    async def _unlock_connector(self, payload: dict[str, Any], then: Then) -> dict[str, Any]:
        c = self._target(payload["connectorId"])
        if c is None:
            return {"status": "NotSupported"}
        if c.transaction_id is not None:
            c.stop_reason = "UnlockCommand"
        c.plugged_until = None
        then.append(self._poke(c))
        return {"status": "Unlocked"}

    async def _change_availability(self, payload: dict[str, Any], then: Then) -> dict[str, Any]:
        connector_id = payload["connectorId"]
        operative = payload["type"] == "Operative"
        if connector_id == 0:
            targets = list(self.connectors)
        else:
            c = self._target(connector_id)
            if c is None:
                return {"status": "Rejected"}
            targets = [c]
        scheduled = False
        for c in targets:
            if c.transaction_id is not None and not operative:
                c.pending_available = False
                scheduled = True
            else:
                c.available = operative
                c.pending_available = None
        then.append(self._poke(*targets))
        if connector_id == 0:
            then.append(self._status_zero)
        return {"status": "Scheduled" if scheduled else "Accepted"}

    async def _get_configuration(self, payload: dict[str, Any], then: Then) -> dict[str, Any]:
        return self.keys.get_configuration(payload.get("key"))

    async def _change_configuration(self, payload: dict[str, Any], then: Then) -> dict[str, Any]:
        return {"status": self.keys.change_configuration(payload["key"], payload["value"])}

    async def _clear_cache(self, payload: dict[str, Any], then: Then) -> dict[str, Any]:
        self.auth_cache.clear()
        return {"status": "Accepted"}

    async def _data_transfer(self, payload: dict[str, Any], then: Then) -> dict[str, Any]:
        if payload["vendorId"] != self.scenario.vendor:
            return {"status": "UnknownVendorId"}
        if payload.get("messageId", "Echo") != "Echo":
            return {"status": "UnknownMessageId"}
        answer: dict[str, Any] = {"status": "Accepted"}
        if "data" in payload:
            answer["data"] = payload["data"]
        return answer

    # --------------------------------------------------------- TriggerMessage

    def _trigger_targets(self, connector_id: Any) -> list[Connector] | None:
        if connector_id is None:
            return list(self.connectors)
        c = self._target(connector_id)
        return None if c is None else [c]

    async def _trigger_message(self, payload: dict[str, Any], then: Then) -> dict[str, Any]:
        return self._trigger(payload, then, extended=False)

    async def _extended_trigger_message(
        self, payload: dict[str, Any], then: Then
    ) -> dict[str, Any]:
        return self._trigger(payload, then, extended=True)

    def _trigger(self, payload: dict[str, Any], then: Then, *, extended: bool) -> dict[str, Any]:
        requested = payload["requestedMessage"]
        connector_id = payload.get("connectorId")
        if connector_id is not None and connector_id != 0 and self._target(connector_id) is None:
            return {"status": "Rejected"}
        step = self._triggered(requested, connector_id, extended=extended)
        if step is None:
            return {"status": "NotImplemented"}
        then.append(step)
        return {"status": "Accepted"}

    def _triggered(
        self, requested: str, connector_id: Any, *, extended: bool
    ) -> Callable[[], Awaitable[None]] | None:
        targets = self._trigger_targets(None if connector_id in (None, 0) else connector_id)
        assert targets is not None

        async def boot() -> None:
            with contextlib.suppress(CallTimedOut, CallRefused):
                await self._send_boot()

        async def heartbeat() -> None:
            with contextlib.suppress(CallTimedOut, CallRefused):
                await self.call("Heartbeat", {})

        async def meter_values() -> None:
            for c in targets:
                await self._meter_values(c, "Trigger")

        async def status() -> None:
            if connector_id in (None, 0):
                await self._status_zero()
            if connector_id != 0:
                for c in targets:
                    await self._status_call(c.id, self._status_of(c))

        async def diagnostics() -> None:
            await self._notify("DiagnosticsStatusNotification", {"status": self.diagnostics_status})

        async def firmware() -> None:
            await self._notify("FirmwareStatusNotification", {"status": self.firmware_status})

        async def signed_firmware() -> None:
            await self._notify("SignedFirmwareStatusNotification", {"status": self.firmware_status})

        async def log_status() -> None:
            await self._notify("LogStatusNotification", {"status": self.log_status})

        async def sign_certificate() -> None:
            await self._notify("SignCertificate", {"csr": self._csr()})

        steps: dict[str, Callable[[], Awaitable[None]]] = {
            "BootNotification": boot,
            "Heartbeat": heartbeat,
            "MeterValues": meter_values,
            "StatusNotification": status,
            "DiagnosticsStatusNotification": diagnostics,
            "FirmwareStatusNotification": firmware,
            "LogStatusNotification": log_status,
            "SignChargePointCertificate": sign_certificate,
        }
        if extended:
            steps["FirmwareStatusNotification"] = signed_firmware
        return steps.get(requested)

    async def _notify(self, action: str, payload: dict[str, Any]) -> None:
        with contextlib.suppress(CallTimedOut, CallRefused):
            await self.call(action, payload)

    def _csr(self) -> str:
        body = hashlib.sha256(self.id.encode()).hexdigest()
        return f"-----BEGIN CERTIFICATE REQUEST-----\n{body}\n-----END CERTIFICATE REQUEST-----\n"

    # ------------------------------------------------ Firmware & diagnostics

    async def _progress(self, action: str, statuses: list[str], extra: dict[str, Any]) -> None:
        for status in statuses:
            if action.startswith("Diagnostics"):
                self.diagnostics_status = status
            elif action.startswith("Log"):
                self.log_status = status
            else:
                self.firmware_status = status
            await self._notify(action, {"status": status, **extra})
            await asyncio.sleep(STEP_SECONDS)

    async def _wait_until(self, when: Any) -> None:
        if isinstance(when, str):
            with contextlib.suppress(ValueError):
                delay = (parse_timestamp(when) - datetime.now(UTC)).total_seconds()
                if delay > 0:
                    await asyncio.sleep(delay)

    async def _get_diagnostics(self, payload: dict[str, Any], then: Then) -> dict[str, Any]:
        name = f"{self.id}-diagnostics-{datetime.now(UTC):%Y%m%dT%H%M%SZ}.log"

        async def upload() -> None:
            await self._progress("DiagnosticsStatusNotification", ["Uploading", "Uploaded"], {})

        then.append(upload)
        return {"fileName": name}

    async def _update_firmware(self, payload: dict[str, Any], then: Then) -> dict[str, Any]:
        async def update() -> None:
            await self._wait_until(payload.get("retrieveDate"))
            await self._progress(
                "FirmwareStatusNotification",
                ["Downloading", "Downloaded", "Installing", "Installed"],
                {},
            )
            self.firmware_version = f"{self.scenario.firmware_version}+update"

        then.append(update)
        return {}

    async def _signed_update_firmware(self, payload: dict[str, Any], then: Then) -> dict[str, Any]:
        request_id = payload["requestId"]
        firmware = payload["firmware"]

        async def update() -> None:
            await self._wait_until(firmware.get("retrieveDateTime"))
            await self._progress(
                "SignedFirmwareStatusNotification",
                ["Downloading", "Downloaded", "SignatureVerified", "Installing", "Installed"],
                {"requestId": request_id},
            )
            self.firmware_version = f"{self.scenario.firmware_version}+update"

        then.append(update)
        return {"status": "Accepted"}

    async def _get_log(self, payload: dict[str, Any], then: Then) -> dict[str, Any]:
        request_id = payload["requestId"]
        kind = payload["logType"]

        async def upload() -> None:
            await self._progress(
                "LogStatusNotification", ["Uploading", "Uploaded"], {"requestId": request_id}
            )

        then.append(upload)
        return {"status": "Accepted", "filename": f"{self.id}-{kind}.log"}

    # ----------------------------------------------------------- Certificates

    @staticmethod
    def _hash_data(certificate: str) -> dict[str, str]:
        digest = hashlib.sha256(certificate.encode()).hexdigest()
        return {
            "hashAlgorithm": "SHA256",
            "issuerNameHash": hashlib.sha256(b"issuer:" + certificate.encode()).hexdigest(),
            "issuerKeyHash": hashlib.sha256(b"key:" + certificate.encode()).hexdigest(),
            "serialNumber": digest[:20],
        }

    @staticmethod
    def _looks_like_certificate(text: str) -> bool:
        return "-----BEGIN CERTIFICATE-----" in text

    async def _install_certificate(self, payload: dict[str, Any], then: Then) -> dict[str, Any]:
        certificate = payload["certificate"]
        if not self._looks_like_certificate(certificate):
            return {"status": "Rejected"}
        stored = self.certificates.setdefault(payload["certificateType"], [])
        data = self._hash_data(certificate)
        if data not in stored:
            if sum(len(v) for v in self.certificates.values()) >= self.keys.integer(
                "CertificateStoreMaxLength"
            ):
                return {"status": "Failed"}
            stored.append(data)
        return {"status": "Accepted"}

    async def _get_installed_certificate_ids(
        self, payload: dict[str, Any], then: Then
    ) -> dict[str, Any]:
        stored = self.certificates.get(payload["certificateType"], [])
        if not stored:
            return {"status": "NotFound"}
        return {"status": "Accepted", "certificateHashData": list(stored)}

    async def _delete_certificate(self, payload: dict[str, Any], then: Then) -> dict[str, Any]:
        wanted = payload["certificateHashData"]
        for stored in self.certificates.values():
            if wanted in stored:
                stored.remove(wanted)
                return {"status": "Accepted"}
        return {"status": "NotFound"}

    async def _certificate_signed(self, payload: dict[str, Any], then: Then) -> dict[str, Any]:
        accepted = self._looks_like_certificate(payload["certificateChain"])
        return {"status": "Accepted" if accepted else "Rejected"}

    # ------------------------------------------------------- Local auth list

    async def _get_local_list_version(self, payload: dict[str, Any], then: Then) -> dict[str, Any]:
        enabled = self.keys.boolean("LocalAuthListEnabled")
        return {"listVersion": self.local_list_version if enabled else -1}

    async def _send_local_list(self, payload: dict[str, Any], then: Then) -> dict[str, Any]:
        if not self.keys.boolean("LocalAuthListEnabled"):
            return {"status": "NotSupported"}
        entries = payload.get("localAuthorizationList", [])
        if len(entries) > self.keys.integer("SendLocalListMaxLength"):
            return {"status": "Failed"}
        version = payload["listVersion"]
        if payload["updateType"] == "Full":
            updated = {e["idTag"]: e["idTagInfo"] for e in entries if "idTagInfo" in e}
        else:
            if version <= self.local_list_version:
                return {"status": "VersionMismatch"}
            updated = dict(self.local_list)
            for entry in entries:
                if "idTagInfo" in entry:
                    updated[entry["idTag"]] = entry["idTagInfo"]
                else:
                    updated.pop(entry["idTag"], None)
        if len(updated) > self.keys.integer("LocalAuthListMaxLength"):
            return {"status": "Failed"}
        self.local_list = updated
        self.local_list_version = version
        return {"status": "Accepted"}

    # ------------------------------------------------------------ Reservation

    async def _reserve_now(self, payload: dict[str, Any], then: Then) -> dict[str, Any]:
        connector_id = payload["connectorId"]
        if connector_id == 0:
            return {"status": "Rejected"}  # ReserveConnectorZeroSupported is false
        c = self._target(connector_id)
        if c is None:
            return {"status": "Rejected"}
        reservation_id = payload["reservationId"]
        for other in self.connectors:  # a known id replaces its reservation
            if other.reservation is not None and other.reservation.id == reservation_id:
                other.reservation = None
                then.append(self._poke(other))
        if not c.available:
            return {"status": "Unavailable"}
        if (
            c.transaction_id is not None
            or c.plugged_until is not None
            or c.remote_start is not None
            or c.reservation is not None
        ):
            return {"status": "Occupied"}
        c.reservation = Reservation(
            reservation_id, payload["idTag"], parse_timestamp(payload["expiryDate"])
        )
        then.append(self._poke(c))
        return {"status": "Accepted"}

    async def _cancel_reservation(self, payload: dict[str, Any], then: Then) -> dict[str, Any]:
        for c in self.connectors:
            if c.reservation is not None and c.reservation.id == payload["reservationId"]:
                c.reservation = None
                then.append(self._poke(c))
                return {"status": "Accepted"}
        return {"status": "Rejected"}

    # ---------------------------------------------------------- Smart charging

    async def _set_charging_profile(self, payload: dict[str, Any], then: Then) -> dict[str, Any]:
        connector_id = payload["connectorId"]
        c = self._target(connector_id)
        status = self.smart.install(
            connector_id,
            payload["csChargingProfiles"],
            transaction_id=c.transaction_id if c is not None else None,
            now=datetime.now(UTC),
        )
        if status == "Accepted":  # the power follows at once
            then.append(self._poke(*self.connectors))
        return {"status": status}

    async def _clear_charging_profile(self, payload: dict[str, Any], then: Then) -> dict[str, Any]:
        status = self.smart.clear(
            profile_id=payload.get("id"),
            connector_id=payload.get("connectorId"),
            purpose=payload.get("chargingProfilePurpose"),
            stack_level=payload.get("stackLevel"),
        )
        then.append(self._poke(*self.connectors))
        return {"status": status}

    async def _get_composite_schedule(self, payload: dict[str, Any], then: Then) -> dict[str, Any]:
        connector_id = payload["connectorId"]
        if connector_id != 0 and self._target(connector_id) is None:
            return {"status": "Rejected"}
        unit = payload.get("chargingRateUnit", "W")
        duration = payload["duration"]
        now = datetime.now(UTC)
        c = self._target(connector_id)
        default = self.scenario.max_power_w * (len(self.connectors) if connector_id == 0 else 1)
        periods = self.smart.composite(
            connector_id,
            duration,
            unit,
            now,
            transaction_start=c.started_at if c is not None else None,
            default_w=default,
        )
        return {
            "status": "Accepted",
            "connectorId": connector_id,
            "scheduleStart": now.strftime("%Y-%m-%dT%H:%M:%SZ"),
            "chargingSchedule": {
                "duration": duration,
                "startSchedule": now.strftime("%Y-%m-%dT%H:%M:%SZ"),
                "chargingRateUnit": unit,
                "chargingSchedulePeriod": periods,
            },
        }
