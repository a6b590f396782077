"""Publishing events: one method per event type, so every publisher sends the same shape.

Services call these after the unit of work that recorded the message has committed
(an event never announces something the database does not hold). Each event goes
to the bus (SSE streams, and other nodes once the bus is Redis-backed) and to the
local sinks (webhooks). Sinks hang off the publisher rather than off the bus on
purpose: in a cluster every node sees every event on the bus, but only the node
that produced an event should POST it, or each webhook would get it once per node.

Event types and their ``data``:

* ``connection``: ``state`` (connected/disconnected), ``remote_address``, and
  ``security_profile`` when connected;
* ``boot``: ``registration``, ``known``, and the BootNotification's fields;
* ``status``: one StatusNotification (every one is published: charge points send
  them on changes, OCPP 1.6 §4.9);
* ``transaction.started``: new transactions only (a retransmission publishes nothing);
* ``transaction.stopped``: ``energy_wh``, ``reason``, ``state`` (completed, or abandoned
  for a transaction a new one on the same connector superseded), ``known`` (false for
  a StopTransaction with an unknown transactionId, kept for review);
* ``meter_values``: ``count`` of sampled values and the latest energy register, if any
  (every MeterValues message: the store does not say whether it was a retransmission);
* ``security_event``: a SecurityEventNotification.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from datetime import datetime
from typing import Any, Protocol

from kilowatt.bus.events import Event, EventBus
from kilowatt.clock import Clock, format_datetime
from kilowatt.domain.models import BootInfo, MeterSample

__all__ = ["EventService", "EventSink", "SecurityEventService", "latest_energy_register"]

log = logging.getLogger("kilowatt.events")

ENERGY_REGISTER = "Energy.Active.Import.Register"


class EventSink(Protocol):
    """Something that takes every event this node produces (webhooks)."""

    def publish(self, event: Event) -> None: ...


def _time(value: datetime | None) -> str | None:
    return None if value is None else format_datetime(value)


def latest_energy_register(samples: Sequence[MeterSample]) -> tuple[int, datetime] | None:
    """The newest whole-meter Energy.Active.Import.Register reading, in Wh, and its time."""
    best: tuple[int, datetime] | None = None
    for sample in samples:
        if sample.measurand != ENERGY_REGISTER or sample.value is None or sample.phase:
            continue
        value = sample.value * 1000 if sample.unit == "kWh" else sample.value
        if best is None or sample.timestamp >= best[1]:
            best = (int(value.to_integral_value()), sample.timestamp)
    return best


class EventService:
    """Builds the events and hands them to the bus and the sinks."""

    def __init__(self, bus: EventBus, clock: Clock, sinks: Sequence[EventSink] = ()) -> None:
        self.bus = bus
        self._clock = clock
        self._sinks = list(sinks)

    @property
    def listened(self) -> bool:
        """Whether anybody takes events now: a sink (webhooks) or a subscriber. The
        per-type methods build nothing otherwise (two of them run for most OCPP
        messages)."""
        return bool(self._sinks) or self.bus.listened

    def publish(
        self,
        event_type: str,
        charge_point_id: str | None,
        data: dict[str, Any],
        *,
        time: datetime | None = None,
    ) -> Event:
        event = self.bus.publish(
            Event(event_type, time or self._clock.now(), charge_point_id, data)
        )
        for sink in self._sinks:
            try:
                sink.publish(event)
            except Exception:
                # A broken sink must not fail the charge point's message.
                log.exception("event sink failed", extra={"event_type": event_type})
        return event

    # ----------------------------------------------------------- one per type

    def connected(
        self, charge_point_id: str, *, remote_address: str, security_profile: int, time: datetime
    ) -> None:
        if not self.listened:
            return
        self.publish(
            "connection",
            charge_point_id,
            {
                "state": "connected",
                "remote_address": remote_address,
                "security_profile": security_profile,
            },
            time=time,
        )

    def disconnected(
        self, charge_point_id: str, *, remote_address: str | None, time: datetime
    ) -> None:
        if not self.listened:
            return
        self.publish(
            "connection",
            charge_point_id,
            {"state": "disconnected", "remote_address": remote_address},
            time=time,
        )

    def boot(
        self,
        charge_point_id: str,
        boot: BootInfo,
        *,
        registration: str,
        known: bool,
        time: datetime,
    ) -> None:
        if not self.listened:
            return
        self.publish(
            "boot",
            charge_point_id,
            {
                "registration": registration,
                "known": known,
                "vendor": boot.vendor,
                "model": boot.model,
                "serial_number": boot.serial_number,
                "charge_box_serial_number": boot.charge_box_serial_number,
                "firmware_version": boot.firmware_version,
                "iccid": boot.iccid,
                "imsi": boot.imsi,
                "meter_type": boot.meter_type,
                "meter_serial_number": boot.meter_serial_number,
            },
            time=time,
        )

    def status(
        self,
        charge_point_id: str,
        *,
        connector_id: int,
        status: str,
        error_code: str,
        info: str | None,
        vendor_id: str | None,
        vendor_error_code: str | None,
        timestamp: datetime | None,
        time: datetime,
    ) -> None:
        if not self.listened:
            return
        self.publish(
            "status",
            charge_point_id,
            {
                "connector_id": connector_id,
                "status": status,
                "error_code": error_code,
                "info": info,
                "vendor_id": vendor_id,
                "vendor_error_code": vendor_error_code,
                "timestamp": _time(timestamp),
            },
            time=time,
        )

    def transaction_started(
        self,
        charge_point_id: str,
        *,
        transaction_id: int,
        connector_id: int,
        id_tag: str,
        id_tag_status: str,
        meter_start: int,
        timestamp: datetime,
        reservation_id: int | None,
        time: datetime,
    ) -> None:
        if not self.listened:
            return
        self.publish(
            "transaction.started",
            charge_point_id,
            {
                "transaction_id": transaction_id,
                "connector_id": connector_id,
                "id_tag": id_tag,
                "id_tag_status": id_tag_status,
                "meter_start": meter_start,
                "timestamp": format_datetime(timestamp),
                "reservation_id": reservation_id,
            },
            time=time,
        )

    def transaction_stopped(
        self,
        charge_point_id: str,
        *,
        transaction_id: int,
        known: bool,
        state: str | None,
        connector_id: int | None,
        id_tag: str | None,
        stop_id_tag: str | None,
        meter_start: int | None,
        meter_stop: int | None,
        energy_wh: int | None,
        reason: str | None,
        timestamp: datetime | None,
        flags: Sequence[str],
        time: datetime,
    ) -> None:
        if not self.listened:
            return
        self.publish(
            "transaction.stopped",
            charge_point_id,
            {
                "transaction_id": transaction_id,
                "known": known,
                "state": state,
                "connector_id": connector_id,
                "id_tag": id_tag,
                "stop_id_tag": stop_id_tag,
                "meter_start": meter_start,
                "meter_stop": meter_stop,
                "energy_wh": energy_wh,
                "reason": reason,
                "timestamp": _time(timestamp),
                "flags": list(flags),
            },
            time=time,
        )

    def meter_values(
        self,
        charge_point_id: str,
        *,
        connector_id: int,
        transaction_id: int | None,
        samples: Sequence[MeterSample],
        time: datetime,
    ) -> None:
        if not self.listened:
            return
        latest = latest_energy_register(samples)
        self.publish(
            "meter_values",
            charge_point_id,
            {
                "connector_id": connector_id,
                "transaction_id": transaction_id,
                "count": len(samples),
                "energy_wh": None if latest is None else latest[0],
                "energy_timestamp": None if latest is None else format_datetime(latest[1]),
            },
            time=time,
        )

    def security_event(
        self,
        charge_point_id: str,
        *,
        event_type: str,
        timestamp: str,
        tech_info: str | None,
        time: datetime,
    ) -> None:
        if not self.listened:
            return
        self.publish(
            "security_event",
            charge_point_id,
            {"event_type": event_type, "timestamp": timestamp, "tech_info": tech_info},
            time=time,
        )


class SecurityEventService:
    """SecurityEventNotification (Security Whitepaper §3.10): logged and published.

    Nothing is stored yet; the event log of security events lands with the security
    features. The timestamp is passed on as sent (it is the charge point's clock).
    """

    def __init__(self, events: EventService | None, clock: Clock) -> None:
        self._events = events
        self._clock = clock

    async def notify(
        self, charge_point_id: str, *, event_type: str, timestamp: str, tech_info: str | None
    ) -> None:
        log.info(
            "security event",
            extra={
                "charge_point": charge_point_id,
                "security_event": event_type,
                "timestamp": timestamp,
                "tech_info": tech_info,
            },
        )
        if self._events is not None:
            self._events.security_event(
                charge_point_id,
                event_type=event_type,
                timestamp=timestamp,
                tech_info=tech_info,
                time=self._clock.now(),
            )
