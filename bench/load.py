"""OCPP 1.6J load generator: N simulated charge points over real WebSockets.

Run it against any Central System that serves ``{url}{chargePointId}``::

    .venv/bin/python bench/load.py --url ws://127.0.0.1:9100/ocpp/ \\
        --charge-points 100 --warmup 2 --duration 10 [--json]

Each simulated charge point connects with the subprotocol ``ocpp1.6`` as
``{id-prefix}{i:05d}`` and sends one BootNotification. When all charge points are connected
(so that a busy server does not starve the handshakes of the late ones), each repeats a
charging session with exactly one outstanding CALL at a time (the next CALL is sent only
when the answer to the previous one has arrived):

    StatusNotification(Available) -> Authorize -> StatusNotification(Preparing)
    -> StartTransaction -> StatusNotification(Charging)
    -> 10 x MeterValues (a Heartbeat after every 5th) -> StopTransaction
    -> StatusNotification(Finishing)

CALLs that the Central System sends are answered with a CALLERROR ``NotImplemented``.

Each charge point begins its first session at a random step of it (the same steps run
after run), as sessions overlap on a real network: the messages offered are the steady
mix of the session from the start. One that begins inside a transaction sends its
StartTransaction first. ``--lockstep`` begins every first session at the top, so that a
short window sees mostly the session's start (Authorize, StartTransaction) from every
charge point at once: a worst case, not the mix.

Paced mode (``--rate MSGS_PER_S``): instead of sending the next CALL as soon as the answer
to the previous one is in, every charge point sends on its own schedule, one CALL every
``connected / rate`` seconds, starting at a random phase so that they do not fire together;
the total offered rate is then ``rate``. A CALL whose answer comes late still waits for it
(one outstanding CALL), and is then sent at once; the slots that passed meanwhile are
skipped, not made up in a burst, and counted (``late_sends``, ``skipped_slots``). In paced
mode the sessions start only once every connected charge point has been accepted
(BootNotification answered, at most ``--call-timeout`` seconds).

Measured: answered CALLs per second and the send-to-answer latency of every CALL answered
during the measurement window (``--duration`` seconds after ``--warmup`` seconds; the
connect phase and the warm-up are not counted). Errors (CALLERROR answers, disconnects,
30 s timeouts, failed connections, malformed answers) are counted over the whole run. The
CPU time this process used during the window is reported too, so you can check that the
generator is not the bottleneck.

The WebSocket client is ``picows`` (Cython, cheap per message); JSON is ``orjson``; the
event loop is uvloop when installed (``--no-uvloop`` to use the asyncio default loop).

Other scripts can use it as a library (``bench/`` is not a package)::

    sys.path.insert(0, "bench")
    from load import run_load
    result = await run_load("ws://127.0.0.1:9100/ocpp/", charge_points=100,
                            duration=10, warmup=2)
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import contextlib
import gc
import json
import math
import random
import resource
import sys
import time
from array import array
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, TextIO

import orjson
from picows import (
    WSCloseCode,
    WSError,
    WSFrame,
    WSListener,
    WSMsgType,
    WSTransport,
    ws_connect,
)

from kilowatt.process import raise_open_file_limit

SUBPROTOCOL = "ocpp1.6"
CALL, CALLRESULT, CALLERROR = 2, 3, 4

DEFAULT_CALL_TIMEOUT_S = 30.0
DEFAULT_CONNECT_TIMEOUT_S = 30.0
DEFAULT_CONNECT_CONCURRENCY = 200
RECONNECT_DELAY_S = 1.0
BOOT_RETRY_MAX_S = 10.0
CLOSE_WAIT_S = 5.0
METER_VALUES_PER_SESSION = 10
HEARTBEAT_EVERY_N_METER_VALUES = 5

# Session script. Each step is (action, argument); the payload is built when it is sent.
ST_STATUS, ST_AUTHORIZE, ST_START, ST_METER, ST_HEARTBEAT, ST_STOP = range(6)


def _session_script() -> tuple[tuple[int, str], ...]:
    steps: list[tuple[int, str]] = [
        (ST_STATUS, "Available"),
        (ST_AUTHORIZE, ""),
        (ST_STATUS, "Preparing"),
        (ST_START, ""),
        (ST_STATUS, "Charging"),
    ]
    for n in range(1, METER_VALUES_PER_SESSION + 1):
        steps.append((ST_METER, ""))
        if n % HEARTBEAT_EVERY_N_METER_VALUES == 0:
            steps.append((ST_HEARTBEAT, ""))
    steps += [(ST_STOP, ""), (ST_STATUS, "Finishing")]
    return tuple(steps)


SESSION = _session_script()
FINISHING_STEP = len(SESSION) - 1
START_STEP = next(i for i, (kind, _) in enumerate(SESSION) if kind == ST_START)


def _entry(first_step: int) -> tuple[int, int | None]:
    """Where a charge point whose first session begins at ``first_step`` starts: the
    step, and the step to go on with after its StartTransaction when ``first_step``
    lies inside a transaction (it needs one first)."""
    if START_STEP < first_step < FINISHING_STEP:
        return START_STEP, first_step
    return first_step, None


class LoadError(Exception):
    """A load run could not be carried out; the message says what to do about it."""


@dataclass
class LoadResult:
    """Outcome of one load run (see the module docstring for what is measured)."""

    url: str
    charge_points: int
    connected: int  # connections open at the end of the measurement window
    warmup_s: float
    duration_s: float  # actual length of the measurement window
    connect_s: float  # time the connect phase took
    calls: int  # CALLs answered (CALLRESULT or CALLERROR) during the window
    msgs_per_s: float  # calls / duration_s
    transactions: int  # charging sessions completed (StopTransaction answered) in the window
    transactions_per_s: float
    p50_ms: float
    p90_ms: float
    p99_ms: float
    max_ms: float
    mean_ms: float
    errors: int  # sum of error_breakdown, whole run
    error_breakdown: dict[str, int]
    rejected: int  # Boot / idTagInfo answers that were not "Accepted" (not counted as errors)
    reconnects: int
    late_answers: int  # answers that arrived after their CALL had timed out
    server_calls: int  # CALLs received from the server (answered NotImplemented)
    cpu_s: float  # CPU time (user + system) of this process during the window
    cpu_s_per_1000_calls: float
    cpu_util: float  # cpu_s / duration_s, i.e. the fraction of one core in use
    loop: str
    first_errors: list[str] = field(default_factory=list)
    failed_connections: int = 0  # connection attempts that failed (= error_breakdown's)
    offered_rate: float | None = None  # paced mode: total CALLs per second offered
    late_sends: int = 0  # paced mode, in the window: CALLs sent after their slot
    skipped_slots: int = 0  # paced mode, in the window: slots that passed unused

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


class _Stats:
    """Counters shared by all simulated charge points of one run."""

    def __init__(self) -> None:
        self.measuring = False
        self.stopping = False
        # Sessions start only once the connect phase is over, so that a busy server does not
        # starve the handshakes of the charge points that are still connecting.
        self.sessions_open = False
        self.answered_total = 0
        self.answered_window = 0
        self.transactions_window = 0  # StopTransaction answered: whole sessions
        self.latencies = array("d")
        self.connected = 0
        self.booted = 0  # connected charge points whose BootNotification was accepted
        self.all_booted = asyncio.Event()  # set when booted reaches connected
        self.errors: dict[str, int] = {
            "callerror": 0,
            "timeout": 0,
            "disconnect": 0,
            "connect_failed": 0,
            "protocol": 0,
        }
        self.rejected = 0
        self.reconnects = 0
        self.late_answers = 0
        self.server_calls = 0
        self.late_sends = 0
        self.skipped_slots = 0
        self.first_errors: list[str] = []
        self.all_closed = asyncio.Event()  # set when stopping and no connection is left

    def error(self, kind: str, detail: str = "") -> None:
        self.errors[kind] += 1
        if detail and len(self.first_errors) < 5:
            self.first_errors.append(f"{kind}: {detail}")

    def check_booted(self) -> None:
        if self.booted >= self.connected:
            self.all_booted.set()

    @property
    def error_count(self) -> int:
        return sum(self.errors.values())


def plan_send(slot: float, now: float, interval: float) -> tuple[float, int, float]:
    """Paced mode: when to send a CALL due at ``slot``, its charge point being free at ``now``.

    Returns ``(send_at, skipped, next_slot)``. On time (``now <= slot``) the CALL waits for
    its slot. Late (the previous answer came after the slot), it is sent at once, and the
    further slots that passed meanwhile are skipped rather than made up in a burst:
    ``skipped`` of them. ``next_slot`` is the slot of the CALL after it, on the original
    grid (the schedule does not drift) and always after ``send_at``.
    """
    if now <= slot:
        return slot, 0, slot + interval
    passed = math.floor((now - slot) / interval)  # further slots at or before now
    return now, passed, slot + (passed + 1) * interval


class _Clock:
    """ISO 8601 UTC timestamps with ``Z``, formatted at most once per second."""

    def __init__(self) -> None:
        self._second = -1
        self._text = ""

    def now(self) -> str:
        second = int(time.time())
        if second != self._second:
            self._second = second
            self._text = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(second))
        return self._text


_CLOCK = _Clock()


class ChargePointSim(WSListener):
    """One simulated charge point, driven entirely from picows callbacks."""

    def __init__(
        self,
        index: int,
        cp_id: str,
        stats: _Stats,
        on_lost: Callable[[ChargePointSim], None],
        call_timeout: float,
        interval: float | None = None,
    ) -> None:
        super().__init__()
        self.index = index
        self.cp_id = cp_id
        self.id_tag = bench_id_tag(index)
        self.stats = stats
        self.on_lost = on_lost
        self.call_timeout = call_timeout
        self.transport: WSTransport | None = None
        self.connected = False
        self.closing = False
        self.booted = False
        self.step = 0
        # The step its first session begins at (sessions overlap on a real network);
        # after a StartTransaction, the step to go on with (see _entry).
        self.first_step = 0
        self.resume_step: int | None = None
        self.waiting = False  # booted, waiting for the sessions to open
        self.msg_counter = 0
        self.pending_id: str | None = None
        self.pending_step = -1  # -1 = BootNotification
        self.pending_stop = False
        self.sent_at = 0.0
        self.transaction_id = 0
        self.meter_wh = 1000 + index * 10
        self.meter_values_sent = 0
        self.fragments: list[bytes] = []
        # Paced mode: seconds between two CALLs (None: send when the answer is in), the
        # slot of the next CALL (None: not placed yet) and the timer waiting for it.
        self.interval = interval
        self.slot: float | None = None
        self.slot_timer: asyncio.TimerHandle | None = None

    # -- picows callbacks -------------------------------------------------------------------

    def on_ws_connected(self, transport: WSTransport) -> None:
        self.transport = transport

    def on_ws_frame(self, transport: WSTransport, frame: WSFrame) -> None:
        msg_type = frame.msg_type
        if msg_type == WSMsgType.TEXT or msg_type == WSMsgType.BINARY:  # noqa: PLR1714
            if not frame.fin:
                self.fragments = [frame.get_payload_as_bytes()]
                return
            data = frame.get_payload_as_bytes()
        elif msg_type == WSMsgType.CONTINUATION:
            self.fragments.append(frame.get_payload_as_bytes())
            if not frame.fin:
                return
            data = b"".join(self.fragments)
            self.fragments = []
        elif msg_type == WSMsgType.CLOSE:
            if not transport.is_close_frame_sent:
                transport.send_close(frame.get_close_code(), frame.get_close_message())
            transport.disconnect()
            return
        else:  # PING is answered by picows, PONG needs nothing
            return
        self._on_message(transport, data)

    def on_ws_disconnected(self, transport: WSTransport) -> None:
        was_connected = self.connected
        self.connected = False
        self.transport = None
        self.fragments = []
        self._cancel_slot()
        if not was_connected:  # e.g. refused during connect(): counted there
            return
        self.stats.connected -= 1
        if self.booted:
            self.stats.booted -= 1
        self.stats.check_booted()
        if self.stats.stopping and self.stats.connected == 0:
            self.stats.all_closed.set()
        if not self.stats.stopping and not self.closing:
            detail = ""
            handshake = transport.close_handshake
            if handshake is not None and handshake.recv is not None:
                recv = handshake.recv
                detail = f"{self.cp_id}: server closed ({recv.code}, {recv.reason!r})"
            else:
                detail = f"{self.cp_id}: connection lost"
            self.stats.error("disconnect", detail)
            self.pending_id = None
            self.on_lost(self)

    # -- OCPP ---------------------------------------------------------------------------------

    def start(self, transport: WSTransport) -> None:
        """Called once the WebSocket is open: register and start the first session."""
        self.transport = transport
        self.connected = True
        self.closing = False
        self._cancel_slot()
        self.booted = False
        self.waiting = False
        self.pending_id = None
        self.step = 0
        self.stats.connected += 1
        self._send_boot()

    def close(self) -> None:
        """Start the WebSocket closing handshake (the server's CLOSE ends the connection)."""
        self.closing = True
        transport = self.transport
        if transport is not None and not transport.is_close_frame_sent:
            transport.send_close(WSCloseCode.OK)

    def abort(self) -> None:
        transport = self.transport
        if transport is not None:
            transport.disconnect(graceful=False)

    def check_timeout(self, now: float) -> None:
        if self.pending_id is not None and now - self.sent_at > self.call_timeout:
            self.stats.error("timeout", f"{self.cp_id}: no answer within {self.call_timeout:g} s")
            self.pending_id = None
            self._advance(ok=False, payload=None)

    def _send_call(self, action: str, payload: dict[str, Any], step: int) -> None:
        transport = self.transport
        if transport is None or not self.connected or self.stats.stopping or self.closing:
            return
        self.msg_counter += 1
        msg_id = str(self.msg_counter)
        self.pending_id = msg_id
        self.pending_step = step
        self.pending_stop = action == "StopTransaction"
        self.sent_at = time.perf_counter()
        transport.send(WSMsgType.TEXT, orjson.dumps([CALL, msg_id, action, payload]))

    def _send_boot(self) -> None:
        self._send_call(
            "BootNotification",
            {
                "chargePointVendor": "KilowattBench",
                "chargePointModel": "SimCP-22",
                "firmwareVersion": "1.0.0",
            },
            -1,
        )

    def _send_step(self) -> None:
        kind, arg = SESSION[self.step]
        now = _CLOCK.now()
        if kind == ST_METER:
            self.meter_wh += 50
            self.meter_values_sent += 1
            self._send_call(
                "MeterValues",
                {
                    "connectorId": 1,
                    "transactionId": self.transaction_id,
                    "meterValue": [
                        {
                            "timestamp": now,
                            "sampledValue": [
                                {
                                    "value": str(self.meter_wh),
                                    "context": "Sample.Periodic",
                                    "measurand": "Energy.Active.Import.Register",
                                    "location": "Outlet",
                                    "unit": "Wh",
                                },
                                {
                                    "value": "11000.0",
                                    "context": "Sample.Periodic",
                                    "measurand": "Power.Active.Import",
                                    "location": "Outlet",
                                    "unit": "W",
                                },
                                {
                                    "value": str(20 + self.meter_values_sent * 5),
                                    "context": "Sample.Periodic",
                                    "measurand": "SoC",
                                    "location": "EV",
                                    "unit": "Percent",
                                },
                            ],
                        }
                    ],
                },
                self.step,
            )
        elif kind == ST_STATUS:
            self._send_call(
                "StatusNotification",
                {"connectorId": 1, "errorCode": "NoError", "status": arg, "timestamp": now},
                self.step,
            )
        elif kind == ST_HEARTBEAT:
            self._send_call("Heartbeat", {}, self.step)
        elif kind == ST_AUTHORIZE:
            self._send_call("Authorize", {"idTag": self.id_tag}, self.step)
        elif kind == ST_START:
            self.meter_values_sent = 0
            self._send_call(
                "StartTransaction",
                {
                    "connectorId": 1,
                    "idTag": self.id_tag,
                    "meterStart": self.meter_wh,
                    "timestamp": now,
                },
                self.step,
            )
        else:  # ST_STOP
            self.meter_wh += 50  # meterStop > meterStart even if no MeterValues got through
            self._send_call(
                "StopTransaction",
                {
                    "transactionId": self.transaction_id,
                    "idTag": self.id_tag,
                    "meterStop": self.meter_wh,
                    "timestamp": now,
                    "reason": "Local",
                },
                self.step,
            )

    def _on_message(self, transport: WSTransport, data: bytes) -> None:
        stats = self.stats
        try:
            msg = orjson.loads(data)
        except orjson.JSONDecodeError:
            stats.error("protocol", f"{self.cp_id}: answer is not JSON: {data[:80]!r}")
            return
        if not isinstance(msg, list) or len(msg) < 3 or not isinstance(msg[1], str):
            stats.error("protocol", f"{self.cp_id}: not an OCPP-J frame: {data[:80]!r}")
            return
        kind = msg[0]
        if kind == CALL:
            stats.server_calls += 1
            transport.send(
                WSMsgType.TEXT,
                orjson.dumps(
                    [
                        CALLERROR,
                        msg[1],
                        "NotImplemented",
                        "Requested Action is not known by receiver",
                        {},
                    ]
                ),
            )
            return
        if kind != CALLRESULT and kind != CALLERROR:  # noqa: PLR1714
            stats.error("protocol", f"{self.cp_id}: unknown message type: {data[:80]!r}")
            return
        if msg[1] != self.pending_id:
            stats.late_answers += 1
            return
        latency = time.perf_counter() - self.sent_at
        self.pending_id = None
        stats.answered_total += 1
        if stats.measuring:
            stats.answered_window += 1
            stats.latencies.append(latency)
            if self.pending_stop and kind == CALLRESULT:
                stats.transactions_window += 1
        if kind == CALLERROR:
            code = msg[2] if len(msg) > 2 else "?"
            description = msg[3] if len(msg) > 3 else ""
            stats.error("callerror", f"{self.cp_id}: {code} {description}")
            self._advance(ok=False, payload=None)
        else:
            payload = msg[2]
            self._advance(ok=True, payload=payload if isinstance(payload, dict) else None)

    def _advance(self, ok: bool, payload: dict[str, Any] | None) -> None:
        """React to the answer (or failure) of the pending CALL and send the next one."""
        if self.stats.stopping or self.closing or not self.connected:
            return
        step = self.pending_step
        if step == -1:  # BootNotification
            if ok and payload is not None and payload.get("status") == "Accepted":
                self.booted = True
                self.stats.booted += 1
                self.stats.check_booted()
                self.step, self.resume_step = _entry(self.first_step)
                self.first_step = 0  # later sessions, and a reconnect, start at the top
                self.waiting = not self.stats.sessions_open
                if not self.waiting:
                    self._send_next()
                return
            # Pending/Rejected (or a CALLERROR): retry after the advised interval, capped.
            if ok:
                self.stats.rejected += 1
            interval = payload.get("interval") if payload is not None else None
            delay = float(interval) if isinstance(interval, int) and interval > 0 else 1.0
            asyncio.get_running_loop().call_later(min(delay, BOOT_RETRY_MAX_S), self._retry_boot)
            return

        kind = SESSION[step][0]
        next_step = step + 1
        if kind == ST_START:
            tx = payload.get("transactionId") if payload is not None else None
            if ok and isinstance(tx, int):
                self.transaction_id = tx
                self._count_rejection(payload)
                if self.resume_step is not None:
                    next_step = self.resume_step
            else:
                if ok:
                    self.stats.error("protocol", f"{self.cp_id}: StartTransaction without id")
                next_step = FINISHING_STEP  # no transaction: skip to the end of the session
        elif kind == ST_AUTHORIZE and ok:
            self._count_rejection(payload)
        if kind == ST_START:
            self.resume_step = None
        self.step = next_step if next_step < len(SESSION) else 0
        self._send_next()

    def begin_sessions(self) -> None:
        """Start the session cycle of a registered charge point that waits for it."""
        if self.connected and self.booted and self.waiting:
            self.waiting = False
            self._send_next()

    def _send_next(self) -> None:
        """Send the CALL of the current step: at once, or in paced mode at its slot."""
        interval = self.interval
        if interval is None:
            self._send_step()
            return
        loop = asyncio.get_running_loop()
        now = loop.time()
        slot = self.slot
        if slot is None:  # first CALL: a random phase within one interval
            slot = now + random.random() * interval
        send_at, skipped, self.slot = plan_send(slot, now, interval)
        stats = self.stats
        if stats.measuring and now > slot:
            stats.late_sends += 1
            stats.skipped_slots += skipped
        if send_at <= now:
            self._send_step()
        else:
            self.slot_timer = loop.call_at(send_at, self._on_slot)

    def _on_slot(self) -> None:
        self.slot_timer = None
        if self.connected and self.booted and self.pending_id is None:
            self._send_step()

    def _cancel_slot(self) -> None:
        if self.slot_timer is not None:
            self.slot_timer.cancel()
            self.slot_timer = None

    def _count_rejection(self, payload: dict[str, Any] | None) -> None:
        info = payload.get("idTagInfo") if payload is not None else None
        if not isinstance(info, dict) or info.get("status") != "Accepted":
            self.stats.rejected += 1

    def _retry_boot(self) -> None:
        if self.connected and not self.booted and self.pending_id is None:
            self._send_boot()


def default_connect_phase_timeout(charge_points: int, connect_rate: float | None) -> float:
    """Upper bound for the connect phase: 60 s plus 10 ms per charge point (or 1/rate)."""
    per_cp = 0.01 if connect_rate is None else max(0.01, 1.0 / connect_rate)
    return 60.0 + charge_points * per_cp


def _percentile(sorted_values: list[float], q: float) -> float:
    """Nearest-rank percentile of an ascending list (q in 0..100); 0.0 for an empty list."""
    if not sorted_values:
        return 0.0
    rank = max(1, math.ceil(q / 100.0 * len(sorted_values)))
    return sorted_values[min(rank, len(sorted_values)) - 1]


def _cpu_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def bench_id_tag(index: int) -> str:
    """The idTag the ``index``-th simulated charge point authorizes with (CiString20)."""
    return f"BENCH{index:06d}"[-20:]


async def register_id_tags(charge_points: int, env: dict[str, str], cwd: Path) -> None:
    """``kilowatt id-tag import``: every simulated charge point's idTag, Accepted, in the
    database ``env`` names (KILOWATT_DATABASE_URL), so that sessions run as in a real
    network; idTags already there are kept. Raises LoadError if the import fails."""
    rows = "".join(bench_id_tag(index) + "\n" for index in range(charge_points))
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "kilowatt",
        "id-tag",
        "import",
        "-",
        stdin=asyncio.subprocess.PIPE,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
        env=env,
        cwd=cwd,
    )
    out, _ = await proc.communicate(("id_tag\n" + rows).encode())
    if proc.returncode != 0:
        raise LoadError(
            f"`kilowatt id-tag import` failed: {out.decode(errors='replace').strip()}; "
            "check KILOWATT_DATABASE_URL"
        )


def raise_fd_limit(needed: int) -> int | None:
    """Raise this process's soft limit on open files to the hard limit (to ``needed``
    if the hard limit is unlimited); the soft limit now, None if unlimited."""
    soft = raise_open_file_limit()
    if soft is not None and soft < needed:
        soft = raise_open_file_limit(needed)
    return soft


class _Progress:
    """Once-per-second status line on stderr (overwritten in place on a terminal)."""

    def __init__(self, stream: TextIO | None) -> None:
        self.stream = stream
        self.tty = stream is not None and stream.isatty()
        self.open_line = False

    def line(self, text: str) -> None:
        if self.stream is None:
            return
        if self.tty:
            self.stream.write("\r" + text + "\x1b[K")
            self.open_line = True
        else:
            self.stream.write(text + "\n")
        self.stream.flush()

    def event(self, text: str) -> None:
        """A line that stays (phase changes); compare.py watches for these."""
        if self.stream is None:
            return
        if self.open_line:
            self.stream.write("\n")
            self.open_line = False
        self.stream.write(text + "\n")
        self.stream.flush()


async def open_websocket(
    listener: WSListener, url: str, headers: list[tuple[str, str]], timeout: float
) -> WSTransport:
    """A picows client connection for ``listener``, handshake included, within
    ``timeout`` seconds (raises OSError, WSError or TimeoutError)."""
    transport, _ = await asyncio.wait_for(
        ws_connect(
            lambda: listener,
            url,
            extra_headers=headers,
            websocket_handshake_timeout=timeout,
            enable_auto_pong=True,
            read_buffer_init_size=4096,  # OCPP frames are small; grows if needed
        ),
        timeout=timeout,
    )
    return transport


async def run_load(
    url: str,
    charge_points: int,
    duration: float,
    warmup: float,
    *,
    connect_rate: float | None = None,
    id_prefix: str = "CP",
    basic_auth_password: str | None = None,
    call_timeout: float = DEFAULT_CALL_TIMEOUT_S,
    connect_timeout: float = DEFAULT_CONNECT_TIMEOUT_S,
    connect_concurrency: int = DEFAULT_CONNECT_CONCURRENCY,
    connect_phase_timeout: float | None = None,
    progress: TextIO | None = sys.stderr,
    rate: float | None = None,
    on_phase: Callable[[str], None] | None = None,
    settle: float = 0.0,
    lockstep: bool = False,
) -> LoadResult:
    """Run the load and return what was measured.

    ``url`` is the base URL; charge point ``i`` connects to ``{url}{id_prefix}{i:05d}``.
    ``connect_rate`` limits new connections per second (``None``: as fast as possible, at
    most ``connect_concurrency`` handshakes in flight); the connect phase ends after
    ``connect_phase_timeout`` seconds at the latest (default: see
    :func:`default_connect_phase_timeout`) and the run goes on with the charge points that
    made it. Progress goes to ``progress`` (``None`` for silence). ``rate`` switches to
    paced mode: that many CALLs per second in total, spread evenly over the connected
    charge points (see the module docstring). ``settle`` seconds pass between the connect
    phase and the first session, every charge point connected and idle. ``on_phase`` is
    called with ``"connected"`` (connect phase and ``settle`` over; in paced mode, the
    BootNotifications answered too; sessions not started yet), ``"measure-start"`` and
    ``"measure-end"``, e.g. to sample the server there. Raises :class:`LoadError` when no
    charge point could connect.
    """
    if not url.startswith(("ws://", "wss://")):
        raise LoadError(f"--url must start with ws:// or wss://, got {url!r}")
    if charge_points < 1:
        raise LoadError("--charge-points must be at least 1")
    if duration <= 0 or warmup < 0:
        raise LoadError("--duration must be > 0 and --warmup >= 0")
    if connect_rate is not None and connect_rate <= 0:
        raise LoadError("--connect-rate must be > 0 (leave it out for no limit)")
    if rate is not None and rate <= 0:
        raise LoadError("--rate must be > 0 (leave it out to send as fast as answered)")
    if settle < 0:
        raise LoadError("settle must be >= 0")
    base = url if url.endswith("/") else url + "/"
    needed = charge_points + 64
    soft = raise_fd_limit(needed)
    if soft is not None and soft < needed:
        raise LoadError(
            f"{charge_points} charge points need about {needed} open files but the limit is "
            f"{soft}; raise it (e.g. `ulimit -n {needed}`) or use fewer --charge-points"
        )

    loop = asyncio.get_running_loop()
    loop_name = type(loop).__module__.split(".")[0]
    stats = _Stats()
    out = _Progress(progress)
    reconnect_tasks: set[asyncio.Task[None]] = set()

    async def connect(sim: ChargePointSim) -> bool:
        headers: list[tuple[str, str]] = [("Sec-WebSocket-Protocol", SUBPROTOCOL)]
        if basic_auth_password is not None:
            token = base64.b64encode(f"{sim.cp_id}:{basic_auth_password}".encode()).decode()
            headers.append(("Authorization", f"Basic {token}"))
        try:
            transport = await open_websocket(sim, base + sim.cp_id, headers, connect_timeout)
        except (OSError, WSError, TimeoutError) as exc:
            stats.error("connect_failed", f"{base + sim.cp_id}: {type(exc).__name__}: {exc}")
            return False
        if transport.response is None:  # the server closed during the handshake
            stats.error("connect_failed", f"{base + sim.cp_id}: closed during the handshake")
            transport.disconnect()
            return False
        accepted = transport.response.headers.get("Sec-WebSocket-Protocol")
        if accepted != SUBPROTOCOL:
            stats.error(
                "connect_failed",
                f"{sim.cp_id}: server did not accept subprotocol {SUBPROTOCOL} (got {accepted!r})",
            )
            transport.disconnect()
            return False
        sim.start(transport)
        return True

    async def reconnect_later(sim: ChargePointSim) -> None:
        # Like a real charge point: keep trying until it works or the run ends.
        while not stats.stopping:
            await asyncio.sleep(RECONNECT_DELAY_S)
            if not stats.stopping and await connect(sim):
                stats.reconnects += 1
                return

    def on_lost(sim: ChargePointSim) -> None:
        if stats.stopping:
            return
        task = loop.create_task(reconnect_later(sim))
        reconnect_tasks.add(task)
        task.add_done_callback(reconnect_tasks.discard)

    sims = [
        ChargePointSim(i, f"{id_prefix}{i:05d}", stats, on_lost, call_timeout)
        for i in range(charge_points)
    ]
    if not lockstep:
        phases = random.Random(charge_points)  # the same phases run after run
        for sim in sims:
            sim.first_step = phases.randrange(len(SESSION))

    started = time.perf_counter()
    phase = "connect"

    async def ticker() -> None:
        last_answered = 0
        last_t = time.perf_counter()
        while True:
            await asyncio.sleep(1.0)
            now = time.perf_counter()
            for sim in sims:
                sim.check_timeout(now)
            answered_rate = (stats.answered_total - last_answered) / max(now - last_t, 1e-9)
            last_answered, last_t = stats.answered_total, now
            offered = "" if rate is None else f" offered={rate:,.0f}"
            out.line(
                f"[load] {phase:<7} t={now - started:6.1f}s "
                f"connected={stats.connected}/{charge_points} "
                f"msgs/s={answered_rate:,.0f}{offered} errors={stats.error_count}"
            )

    ticker_task = loop.create_task(ticker())
    try:
        # -- connect phase --------------------------------------------------------------------
        # Every charge point connects and sends its BootNotification; sessions start when the
        # phase is over. At most `connect_concurrency` handshakes are in flight at a time.
        out.event(f"[load] connecting {charge_points} charge points to {base}{id_prefix}NNNNN")
        semaphore = asyncio.Semaphore(max(1, connect_concurrency))
        connect_tasks: list[asyncio.Task[bool]] = []

        async def guarded(sim: ChargePointSim) -> bool:
            try:
                return await connect(sim)
            finally:
                semaphore.release()

        t_connect = time.perf_counter()
        phase_timeout = (
            connect_phase_timeout
            if connect_phase_timeout is not None
            else default_connect_phase_timeout(charge_points, connect_rate)
        )
        deadline = t_connect + phase_timeout
        first_batch = min(charge_points, connect_concurrency)
        for i, sim in enumerate(sims):
            if connect_rate is not None:
                delay = t_connect + i / connect_rate - time.perf_counter()
                if delay > 0:
                    await asyncio.sleep(delay)
            if time.perf_counter() > deadline:
                break
            await semaphore.acquire()  # bounded: every connect() gives up after connect_timeout
            connect_tasks.append(loop.create_task(guarded(sim)))
            # Nothing is listening / everything is refused: do not try all N.
            if (
                i + 1 >= first_batch
                and stats.connected == 0
                and stats.errors["connect_failed"] >= first_batch
            ):
                break
        unfinished: set[asyncio.Task[bool]] = set()
        if connect_tasks:
            _, unfinished = await asyncio.wait(
                connect_tasks, timeout=max(0.0, deadline - time.perf_counter())
            )
            for task in unfinished:
                task.cancel()
            await asyncio.gather(*unfinished, return_exceptions=True)
        not_tried = charge_points - len(connect_tasks)
        if stats.connected > 0 and (unfinished or not_tried):
            stats.errors["connect_failed"] += len(unfinished) + not_tried
            stats.first_errors.insert(
                0,
                f"connect_failed: connect phase hit its {phase_timeout:g} s limit; "
                f"{len(unfinished) + not_tried} charge points were not connected "
                "(use --connect-rate, fewer --charge-points or --connect-phase-timeout)",
            )
        connect_s = time.perf_counter() - t_connect
        if stats.connected == 0:
            detail = stats.first_errors[0] if stats.first_errors else "unknown error"
            raise LoadError(
                f"no charge point could connect to {base} (first error: {detail}); "
                "check that the Central System is running and that --url is right"
            )
        if rate is not None:
            # Paced: every charge point registered before the schedule starts, so that
            # the Boot storm is not part of it and the server can be measured idle.
            stats.all_booted.clear()
            if stats.booted < stats.connected:
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(stats.all_booted.wait(), call_timeout)
            out.event(f"[load] booted {stats.booted}/{stats.connected} connected charge points")
            interval = max(stats.connected, 1) / rate
            for sim in sims:
                sim.interval = interval
        if settle > 0:
            phase = "settle"
            await asyncio.sleep(settle)
        if on_phase is not None:
            on_phase("connected")
        # With thousands of charge points, this process's own full garbage collections
        # (every connection's objects traversed, the loop stopped) would show up as
        # server latency: what is alive now is frozen, and so is whatever survives a
        # full collection later.
        gc.collect()
        gc.freeze()
        if _freeze_survivors not in gc.callbacks:
            gc.callbacks.append(_freeze_survivors)
        stats.sessions_open = True
        for sim in sims:
            sim.begin_sessions()
        pacing = "" if rate is None else f" paced at {rate:g} msgs/s;"
        out.event(
            f"[load] connected {stats.connected}/{charge_points} in {connect_s:.1f}s; "
            f"sessions started;{pacing} warm-up {warmup:g}s"
        )

        # -- warm-up and measurement ----------------------------------------------------------
        phase = "warmup"
        await asyncio.sleep(warmup)
        phase = "measure"
        out.event(f"[load] measure-start duration={duration:g}s")
        if on_phase is not None:
            on_phase("measure-start")
        cpu0 = _cpu_seconds()
        t0 = time.perf_counter()
        stats.measuring = True
        await asyncio.sleep(duration)
        stats.measuring = False
        t1 = time.perf_counter()
        cpu1 = _cpu_seconds()
        connected_at_end = stats.connected
        out.event("[load] measure-end")
        if on_phase is not None:
            on_phase("measure-end")
    finally:
        # -- shutdown: closing handshake, bounded wait, then abort ------------------------------
        phase = "stop"
        stats.stopping = True
        stats.measuring = False
        for reconnect_task in list(reconnect_tasks):
            reconnect_task.cancel()
        await asyncio.gather(*reconnect_tasks, return_exceptions=True)
        for sim in sims:
            sim.close()
        if stats.connected > 0:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stats.all_closed.wait(), CLOSE_WAIT_S)
        for sim in sims:
            sim.abort()
        if stats.connected > 0:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stats.all_closed.wait(), 1.0)
        ticker_task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await ticker_task

    window = t1 - t0
    cpu_s = cpu1 - cpu0
    ordered = sorted(stats.latencies)
    calls = stats.answered_window
    return LoadResult(
        url=base,
        charge_points=charge_points,
        connected=connected_at_end,
        warmup_s=warmup,
        duration_s=round(window, 3),
        connect_s=round(connect_s, 3),
        calls=calls,
        msgs_per_s=round(calls / window, 1),
        transactions=stats.transactions_window,
        transactions_per_s=round(stats.transactions_window / window, 1),
        p50_ms=round(_percentile(ordered, 50) * 1000, 3),
        p90_ms=round(_percentile(ordered, 90) * 1000, 3),
        p99_ms=round(_percentile(ordered, 99) * 1000, 3),
        max_ms=round((ordered[-1] if ordered else 0.0) * 1000, 3),
        mean_ms=round((sum(ordered) / len(ordered) if ordered else 0.0) * 1000, 3),
        errors=stats.error_count,
        error_breakdown=dict(stats.errors),
        rejected=stats.rejected,
        reconnects=stats.reconnects,
        late_answers=stats.late_answers,
        server_calls=stats.server_calls,
        cpu_s=round(cpu_s, 3),
        cpu_s_per_1000_calls=round(cpu_s / calls * 1000, 4) if calls else 0.0,
        cpu_util=round(cpu_s / window, 3),
        loop=loop_name,
        first_errors=list(stats.first_errors),
        failed_connections=stats.errors["connect_failed"],
        offered_rate=rate,
        late_sends=stats.late_sends,
        skipped_slots=stats.skipped_slots,
    )


def format_result(result: LoadResult) -> str:
    """Human-readable summary of a :class:`LoadResult`."""
    breakdown = ", ".join(f"{k}={v}" for k, v in result.error_breakdown.items() if v) or "none"
    lines = [
        f"url            {result.url}",
        f"charge points  {result.connected}/{result.charge_points} connected at the end "
        f"(connect phase {result.connect_s:.1f}s, {result.failed_connections} failed, "
        f"reconnects {result.reconnects})",
        f"window         {result.duration_s:.1f}s after {result.warmup_s:g}s warm-up",
        f"answered CALLs {result.calls}  ->  {result.msgs_per_s:,.0f} msgs/s",
        *(
            [
                f"paced          {result.offered_rate:,.0f} msgs/s offered; "
                f"{result.late_sends} CALLs sent late, {result.skipped_slots} slots skipped"
            ]
            if result.offered_rate is not None
            else []
        ),
        f"transactions   {result.transactions}  ->  {result.transactions_per_s:,.1f} /s "
        "(complete sessions: Start, 10 MeterValues, Stop)",
        f"latency ms     p50 {result.p50_ms:.2f}  p90 {result.p90_ms:.2f}  "
        f"p99 {result.p99_ms:.2f}  max {result.max_ms:.2f}  mean {result.mean_ms:.2f}",
        f"errors         {result.errors} ({breakdown})",
        f"not accepted   {result.rejected} (Boot/idTagInfo status other than Accepted)",
        f"load CPU       {result.cpu_s:.2f}s = {result.cpu_util:.0%} of one core, "
        f"{result.cpu_s_per_1000_calls:.3f} CPU-s per 1000 CALLs ({result.loop} loop)",
    ]
    lines += [f"first error    {e}" for e in result.first_errors[:3]]
    return "\n".join(lines)


def _freeze_survivors(phase: str, info: dict[str, int]) -> None:
    if phase == "stop" and info.get("generation") == 2:
        gc.freeze()


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description="OCPP 1.6J load generator: simulated charge points over WebSockets."
    )
    parser.add_argument(
        "--url",
        default="ws://127.0.0.1:9100/ocpp/",
        help="base URL; the charge point id is appended (default ws://127.0.0.1:9100/ocpp/)",
    )
    parser.add_argument("--charge-points", type=int, default=100, help="default 100")
    parser.add_argument(
        "--duration", type=float, default=10.0, help="measured seconds (default 10)"
    )
    parser.add_argument(
        "--warmup", type=float, default=2.0, help="seconds before measuring (default 2)"
    )
    parser.add_argument(
        "--connect-rate",
        type=float,
        default=None,
        help="new connections per second (default: unlimited, "
        f"{DEFAULT_CONNECT_CONCURRENCY} handshakes in flight)",
    )
    parser.add_argument(
        "--connect-phase-timeout",
        type=float,
        default=None,
        help="give up connecting after this many seconds (default: 60 + 0.01 per charge "
        "point, or 1/--connect-rate per charge point)",
    )
    parser.add_argument(
        "--rate",
        type=float,
        default=None,
        metavar="MSGS_PER_S",
        help="paced mode: offer this many CALLs per second in total, spread evenly over the "
        "charge points (default: each sends its next CALL as soon as the answer is in)",
    )
    parser.add_argument(
        "--lockstep",
        action="store_true",
        help="every charge point begins its first session at the top (Status, Authorize, "
        "Start...) at once; default: each at a random step of it, as sessions overlap on a "
        "real network",
    )
    parser.add_argument("--id-prefix", default="CP", help="charge point id prefix (default CP)")
    parser.add_argument(
        "--basic-auth-password",
        default=None,
        help="send 'Authorization: Basic' with the charge point id as user name",
    )
    parser.add_argument(
        "--call-timeout",
        type=float,
        default=DEFAULT_CALL_TIMEOUT_S,
        help=f"seconds to wait for an answer (default {DEFAULT_CALL_TIMEOUT_S:g})",
    )
    parser.add_argument(
        "--no-uvloop", action="store_true", help="use the asyncio default loop, not uvloop"
    )
    parser.add_argument(
        "--json", action="store_true", help="print the result as one JSON object on stdout"
    )
    parser.add_argument("--quiet", action="store_true", help="no progress lines on stderr")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if not args.no_uvloop:
        try:
            import uvloop

            asyncio.set_event_loop_policy(uvloop.EventLoopPolicy())
        except ImportError:
            pass
    try:
        result = asyncio.run(
            run_load(
                args.url,
                args.charge_points,
                args.duration,
                args.warmup,
                connect_rate=args.connect_rate,
                id_prefix=args.id_prefix,
                basic_auth_password=args.basic_auth_password,
                call_timeout=args.call_timeout,
                connect_phase_timeout=args.connect_phase_timeout,
                progress=None if args.quiet else sys.stderr,
                rate=args.rate,
                lockstep=args.lockstep,
            )
        )
    except LoadError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("interrupted; no result", file=sys.stderr)
        return 130
    if args.json:
        print(json.dumps(result.to_dict()), flush=True)
    else:
        print(format_result(result), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
