"""Charge point configuration: GetConfiguration and ChangeConfiguration with server-side state.

For every charge point the store keeps

* the *reported* configuration: its last GetConfiguration answer (keys, values,
  read-only flags, and the keys it answered ``unknownKey`` for);
* the *desired* configuration: the values of its template, with its own values on
  top (per charge point wins);
* every ChangeConfiguration sent, with the answer (Accepted, Rejected,
  RebootRequired, NotSupported) or the failure.

Both actions are *intercepted* on the :class:`CommandService`, so a CALL sent
through the generic API endpoint (``POST …/calls/ChangeConfiguration``) is
validated and recorded exactly like one sent here. The difference between desired
and reported is the *drift*; :meth:`ConfigurationService.apply` sends it.

After an Accepted BootNotification the configuration is fetched (setting
``configuration_sync_on_boot``) and the drift applied (``configuration_apply_on_boot``),
in the background and only once the BootNotification answer has been written.

Write-only keys (AuthorizationKey) are never stored, returned or logged in clear:
only that one was set, when, and the answer.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable, Mapping, Sequence
from contextvars import ContextVar
from dataclasses import dataclass, field
from datetime import datetime
from enum import StrEnum
from typing import Any

from kilowatt.clock import Clock
from kilowatt.domain.configuration import (
    Capabilities,
    ChangeRecord,
    ChangeStatus,
    ConfigurationError,
    ConfigurationTemplate,
    DesiredValue,
    DriftEntry,
    ReportedKey,
    SyncState,
    capabilities,
    check_desired,
    check_value,
    compute_drift,
    effective_desired,
    is_secret,
    redact,
)
from kilowatt.protocol.errors import CallErrorReceived, CallTimeout, NotConnected
from kilowatt.protocol.router import CallContext, Handler
from kilowatt.protocol.session import InvalidCallResult
from kilowatt.services.commands import CommandService, Send, UnknownChargePoint
from kilowatt.store.base import Repositories, Store

__all__ = [
    "ApplyResult",
    "ChangeOutcome",
    "ConfigurationService",
    "ConfigurationView",
    "Origin",
    "ResetOutcome",
    "UnknownTemplate",
]

log = logging.getLogger("kilowatt.configuration")

# Failures of a CALL that was (or would have been) sent: recorded, then re-raised.
CALL_FAILURES = (NotConnected, CallTimeout, CallErrorReceived, InvalidCallResult)


class Origin(StrEnum):
    """Who asked for a GetConfiguration or ChangeConfiguration (kept with each change)."""

    API = "api"  # the configuration API / CLI
    APPLY = "apply"  # applying the drift on request
    BOOT = "boot"  # automatically after a BootNotification
    CALL = "call"  # anything else: the generic calls endpoint, other features


# Set by this service around the CALLs it sends; the interceptors read it.
_ORIGIN: ContextVar[Origin] = ContextVar("kilowatt_configuration_origin", default=Origin.CALL)


class UnknownTemplate(Exception):
    """No configuration template with that name."""


@dataclass(frozen=True, slots=True)
class ResetOutcome:
    type: str
    status: str | None = None
    error: str | None = None


@dataclass(frozen=True, slots=True)
class ChangeOutcome:
    """What became of one ChangeConfiguration. ``value`` is None for a write-only key."""

    key: str
    value: str | None
    secret: bool
    status: str | None = None
    error: str | None = None
    reset: ResetOutcome | None = None


@dataclass(frozen=True, slots=True)
class ApplyResult:
    changes: list[ChangeOutcome]
    # Drift that applying does not send: read-only, unknown to the charge point, or
    # set already and waiting for a reboot.
    skipped: list[DriftEntry]


@dataclass(frozen=True)
class ConfigurationView:
    """Everything the store knows about one charge point's configuration."""

    charge_point_id: str
    reported: list[ReportedKey]
    desired: dict[str, DesiredValue]
    template: str | None
    drift: list[DriftEntry]
    last_answers: list[ChangeRecord]
    sync: SyncState | None
    last_boot_at: datetime | None
    # Changes answered RebootRequired since the last boot: key → value (None if secret).
    pending_reboot: dict[str, str | None] = field(default_factory=dict)

    @property
    def reboot_required(self) -> bool:
        return bool(self.pending_reboot)

    @property
    def capabilities(self) -> Capabilities:
        return capabilities(self.reported)

    @property
    def reported_values(self) -> dict[str, ReportedKey]:
        return {entry.key: entry for entry in self.reported}


def _describe(exc: BaseException) -> str:
    if isinstance(exc, CallErrorReceived):
        return f"CALLERROR {exc.code}: {exc.description}"
    if isinstance(exc, CallTimeout):
        return f"no answer in time: {exc}"
    if isinstance(exc, NotConnected):
        return f"not connected: {exc}"
    if isinstance(exc, InvalidCallResult):
        return f"invalid answer: {exc.error.description}"
    return repr(exc)


@dataclass(frozen=True)
class _State:
    exists: bool
    last_boot_at: datetime | None = None
    reported: list[ReportedKey] = field(default_factory=list)
    template: str | None = None
    template_values: Mapping[str, str] = field(default_factory=dict)
    own: Mapping[str, str] = field(default_factory=dict)
    latest: list[ChangeRecord] = field(default_factory=list)
    sync: SyncState | None = None


def _read_state(charge_point_id: str, repos: Repositories) -> _State:
    point = repos.charge_points.get(charge_point_id)
    if point is None:
        return _State(exists=False)
    config = repos.configuration
    template = config.template_of(charge_point_id)
    return _State(
        exists=True,
        last_boot_at=point.last_boot_at,
        reported=config.list_reported(charge_point_id),
        template=template,
        template_values=config.template_values(template) if template is not None else {},
        own=config.list_desired(charge_point_id),
        latest=config.latest_changes(charge_point_id),
        sync=config.get_sync(charge_point_id),
    )


class ConfigurationService:
    def __init__(
        self, store: Store, clock: Clock, *, sync_on_boot: bool, apply_on_boot: bool
    ) -> None:
        self._store = store
        self._clock = clock
        self.sync_on_boot = sync_on_boot
        self.apply_on_boot = apply_on_boot
        self._commands: CommandService | None = None
        self._answered: Callable[[str], Awaitable[None]] | None = None
        self._after_boot_tasks: dict[str, asyncio.Task[None]] = {}
        self._closed = False

    def attach(
        self, commands: CommandService, *, answered: Callable[[str], Awaitable[None]]
    ) -> None:
        """Send through ``commands`` and intercept its configuration CALLs.

        ``answered(charge_point_id)`` returns once the answers to the CALLs the
        charge point has sent so far are written (the composition root waits on its
        connection): the GetConfiguration after a boot goes out after the
        BootNotification answer, never before.
        """
        self._commands = commands
        self._answered = answered
        commands.intercept("GetConfiguration", self._intercept_get)
        commands.intercept("ChangeConfiguration", self._intercept_change)

    def _require_commands(self) -> CommandService:
        if self._commands is None:  # pragma: no cover - wired by the composition root
            raise RuntimeError("the configuration service is not attached to a command service")
        return self._commands

    # ------------------------------------------------------------- reading

    async def view(self, charge_point_id: str) -> ConfigurationView:
        """Reported, desired, drift and last answers. Raises UnknownChargePoint."""
        state = await self._store.read(lambda repos: _read_state(charge_point_id, repos))
        if not state.exists:
            raise UnknownChargePoint(charge_point_id)
        return self._view(charge_point_id, state)

    def _view(self, charge_point_id: str, state: _State) -> ConfigurationView:
        desired = effective_desired(state.template, state.template_values, state.own)
        pending = {
            change.key: change.value
            for change in state.latest
            if change.status == ChangeStatus.REBOOT_REQUIRED
            and change.answered_at is not None
            and (state.last_boot_at is None or change.answered_at > state.last_boot_at)
        }
        reported = {entry.key: entry for entry in state.reported}
        return ConfigurationView(
            charge_point_id=charge_point_id,
            reported=state.reported,
            desired=desired,
            template=state.template,
            drift=compute_drift(desired, reported, pending),
            last_answers=state.latest,
            sync=state.sync,
            last_boot_at=state.last_boot_at,
            pending_reboot=pending,
        )

    async def capabilities(self, charge_point_id: str) -> Capabilities:
        """What the charge point last reported about itself (feature profiles, list
        lengths, stack levels …), for the features that act on it. All None when it
        was never synchronized."""
        reported = await self._store.read(
            lambda repos: repos.configuration.list_reported(charge_point_id)
        )
        return capabilities(reported)

    async def desired_value(self, charge_point_id: str, key: str) -> str | None:
        """The desired value of ``key`` (its own, else its template's), or None."""

        def work(repos: Repositories) -> str | None:
            config = repos.configuration
            own = config.list_desired(charge_point_id)
            if key in own:
                return own[key]
            template = config.template_of(charge_point_id)
            return None if template is None else config.template_values(template).get(key)

        return await self._store.read_now(work)

    # -------------------------------------------------------------- remote

    async def refresh(
        self,
        charge_point_id: str,
        keys: Sequence[str] | None = None,
        *,
        timeout: float | None = None,
        origin: Origin = Origin.API,
    ) -> ConfigurationView:
        """GetConfiguration (all keys, or ``keys`` in batches of the charge point's
        GetConfigurationMaxKeys); return the updated view."""
        commands = self._require_commands()
        batches: list[list[str]] = []
        if keys:
            wanted = list(dict.fromkeys(keys))
            limit = (await self.capabilities(charge_point_id)).get_configuration_max_keys
            size = limit if limit is not None and limit > 0 else len(wanted)
            batches = [wanted[i : i + size] for i in range(0, len(wanted), size)]
        token = _ORIGIN.set(origin)
        try:
            if not batches:
                await commands.call(charge_point_id, "GetConfiguration", {}, timeout=timeout)
            for batch in batches:
                await commands.call(
                    charge_point_id, "GetConfiguration", {"key": batch}, timeout=timeout
                )
        finally:
            _ORIGIN.reset(token)
        return await self.view(charge_point_id)

    async def change(
        self,
        charge_point_id: str,
        key: str,
        value: str,
        *,
        reset: str | None = None,
        timeout: float | None = None,
        origin: Origin = Origin.API,
    ) -> ChangeOutcome:
        """Validate, send ChangeConfiguration, record the answer.

        Raises UnknownChargePoint, ReadOnlyKey or InvalidValue before anything is
        sent, and what :meth:`CommandService.call` raises. The charge point's answer
        is returned whatever it is. With ``reset`` ("Soft" or "Hard"), an answer
        RebootRequired is followed by a Reset of that type.
        """
        commands = self._require_commands()

        def work(repos: Repositories) -> list[ReportedKey] | None:
            if repos.charge_points.get(charge_point_id) is None:
                return None
            return repos.configuration.list_reported(charge_point_id)

        state = await self._store.read(work)
        if state is None:
            raise UnknownChargePoint(charge_point_id)
        normalized = check_value(key, value, reported={entry.key: entry for entry in state})
        secret = is_secret(key)
        token = _ORIGIN.set(origin)
        try:
            result = await commands.call(
                charge_point_id,
                "ChangeConfiguration",
                {"key": key, "value": normalized},
                timeout=timeout,
            )
        finally:
            _ORIGIN.reset(token)
        status = str(result["status"])
        outcome_reset = None
        if reset is not None and status == ChangeStatus.REBOOT_REQUIRED:
            outcome_reset = await self._reset(charge_point_id, reset, timeout)
        return ChangeOutcome(
            key=key,
            value=None if secret else normalized,
            secret=secret,
            status=status,
            reset=outcome_reset,
        )

    async def _reset(self, charge_point_id: str, kind: str, timeout: float | None) -> ResetOutcome:
        commands = self._require_commands()
        try:
            answer = await commands.call(charge_point_id, "Reset", {"type": kind}, timeout=timeout)
        except CALL_FAILURES as exc:
            log.warning(
                "reset after RebootRequired failed",
                extra={"charge_point": charge_point_id, "reason": _describe(exc)},
            )
            return ResetOutcome(kind, error=_describe(exc))
        log.info(
            "reset after RebootRequired",
            extra={"charge_point": charge_point_id, "type": kind, "status": answer["status"]},
        )
        return ResetOutcome(kind, status=str(answer["status"]))

    async def apply(
        self,
        charge_point_id: str,
        *,
        timeout: float | None = None,
        origin: Origin = Origin.APPLY,
        refresh: bool = True,
    ) -> ApplyResult:
        """Send the drift: a ChangeConfiguration for every desired value the charge
        point does not have (after fetching those keys, with ``refresh``).

        A value refused before sending, or a key that fails (timeout, CALLERROR), is
        reported in its outcome and the others go on; NotConnected stops it all.
        """
        view = await self.view(charge_point_id)
        if refresh and view.desired:
            view = await self.refresh(
                charge_point_id, list(view.desired), timeout=timeout, origin=origin
            )
        changes: list[ChangeOutcome] = []
        skipped: list[DriftEntry] = []
        for entry in view.drift:
            if not entry.applicable:
                skipped.append(entry)
                continue
            try:
                changes.append(
                    await self.change(
                        charge_point_id, entry.key, entry.desired, timeout=timeout, origin=origin
                    )
                )
            except ConfigurationError as exc:
                changes.append(ChangeOutcome(entry.key, entry.desired, False, error=exc.message))
            except (CallTimeout, CallErrorReceived, InvalidCallResult) as exc:
                changes.append(ChangeOutcome(entry.key, entry.desired, False, error=_describe(exc)))
        log.info(
            "configuration applied",
            extra={
                "charge_point": charge_point_id,
                "origin": origin.value,
                "sent": len(changes),
                "skipped": len(skipped),
            },
        )
        return ApplyResult(changes, skipped)

    # ------------------------------------------------------- interceptors

    async def _intercept_get(
        self, charge_point_id: str, payload: dict[str, Any], send: Send
    ) -> dict[str, Any]:
        try:
            result = await send(payload)
        except CALL_FAILURES as exc:
            await self._record_sync_error(charge_point_id, exc)
            raise
        now = self._clock.now()
        reported: dict[str, ReportedKey] = {}
        for item in result.get("configurationKey", ()):
            key = item["key"]
            # A charge point that reports a write-only value anyway: not kept.
            value = None if is_secret(key) else item.get("value")
            reported[key] = ReportedKey(key, value, bool(item["readonly"]), now)
        unknown = [
            key for key in dict.fromkeys(result.get("unknownKey", ())) if key not in reported
        ]
        complete = not payload.get("key")
        await self._store.write(
            lambda repos: repos.configuration.record_report(
                charge_point_id, list(reported.values()), unknown, now, complete=complete
            )
        )
        log.info(
            "configuration reported",
            extra={
                "charge_point": charge_point_id,
                "origin": _ORIGIN.get().value,
                "keys": len(reported),
                "unknown": len(unknown),
                "complete": complete,
            },
        )
        return dict(redact("GetConfiguration", result))

    async def _record_sync_error(self, charge_point_id: str, exc: BaseException) -> None:
        now = self._clock.now()
        reason = _describe(exc)
        try:
            await self._store.write(
                lambda repos: repos.configuration.set_sync_error(charge_point_id, reason, now)
            )
        except Exception:
            log.exception("could not record a failed GetConfiguration")

    async def _intercept_change(
        self, charge_point_id: str, payload: dict[str, Any], send: Send
    ) -> dict[str, Any]:
        key: str = payload["key"]
        reported = await self._store.read(
            lambda repos: repos.configuration.list_reported(charge_point_id)
        )
        normalized = check_value(
            key, payload["value"], reported={entry.key: entry for entry in reported}
        )
        secret = is_secret(key)
        origin = _ORIGIN.get()
        requested_at = self._clock.now()
        try:
            result = await send({"key": key, "value": normalized})
        except (CallTimeout, CallErrorReceived, InvalidCallResult) as exc:
            failed = ChangeRecord(
                charge_point_id=charge_point_id,
                key=key,
                value=None if secret else normalized,
                secret=secret,
                origin=origin.value,
                requested_at=requested_at,
                error=_describe(exc),
            )
            await self._store.write(lambda repos: repos.configuration.add_change(failed))
            raise
        now = self._clock.now()
        status = str(result["status"])
        record = ChangeRecord(
            charge_point_id=charge_point_id,
            key=key,
            value=None if secret else normalized,
            secret=secret,
            origin=origin.value,
            requested_at=requested_at,
            status=status,
            answered_at=now,
        )

        def work(repos: Repositories) -> None:
            repos.configuration.add_change(record)
            if status == ChangeStatus.ACCEPTED and not secret:
                repos.configuration.set_reported_value(charge_point_id, key, normalized, now)

        await self._store.write(work)
        # Never the value: the key may be write-only, and values are the operator's.
        log.info(
            "configuration changed",
            extra={
                "charge_point": charge_point_id,
                "key": key,
                "status": status,
                "origin": origin.value,
            },
        )
        return result

    # ------------------------------------------------------------- desired

    async def set_desired(self, charge_point_id: str, key: str, value: str) -> str:
        """Set a desired value for one charge point; return it as stored (normalized).

        Raises UnknownChargePoint, ReadOnlyKey, InvalidValue or NotDesirable."""
        normalized = check_desired(key, value)
        now = self._clock.now()

        def work(repos: Repositories) -> bool:
            if repos.charge_points.get(charge_point_id) is None:
                return False
            repos.configuration.set_desired(charge_point_id, key, normalized, now)
            return True

        if not await self._store.write(work):
            raise UnknownChargePoint(charge_point_id)
        return normalized

    async def remove_desired(self, charge_point_id: str, key: str) -> bool:
        return await self._store.write(
            lambda repos: repos.configuration.remove_desired(charge_point_id, key)
        )

    async def add_template(self, name: str, description: str | None = None) -> None:
        now = self._clock.now()
        await self._store.write(
            lambda repos: repos.configuration.add_template(name, description, now)
        )

    async def remove_template(self, name: str) -> bool:
        return await self._store.write(lambda repos: repos.configuration.remove_template(name))

    async def get_template(self, name: str) -> ConfigurationTemplate | None:
        return await self._store.read(lambda repos: repos.configuration.get_template(name))

    async def list_templates(self) -> list[ConfigurationTemplate]:
        return await self._store.read(lambda repos: repos.configuration.list_templates())

    async def set_template_value(self, name: str, key: str, value: str) -> str:
        """Raises UnknownTemplate, ReadOnlyKey, InvalidValue or NotDesirable."""
        normalized = check_desired(key, value)
        now = self._clock.now()
        if not await self._store.write(
            lambda repos: repos.configuration.set_template_value(name, key, normalized, now)
        ):
            raise UnknownTemplate(name)
        return normalized

    async def remove_template_value(self, name: str, key: str) -> bool:
        return await self._store.write(
            lambda repos: repos.configuration.remove_template_value(name, key)
        )

    async def assign_template(self, charge_point_id: str, name: str | None) -> None:
        """Make ``name`` the charge point's template (None: none). Raises
        UnknownChargePoint or UnknownTemplate."""
        now = self._clock.now()

        def work(repos: Repositories) -> str | None:
            if repos.charge_points.get(charge_point_id) is None:
                return "charge point"
            if name is not None and repos.configuration.get_template(name) is None:
                return "template"
            repos.configuration.assign_template(charge_point_id, name, now)
            return None

        missing = await self._store.write(work)
        if missing == "charge point":
            raise UnknownChargePoint(charge_point_id)
        if missing == "template":
            raise UnknownTemplate(name)

    # ---------------------------------------------------------------- boot

    def boot_handler(self, handler: Handler) -> Handler:
        """Wrap the BootNotification handler.

        An Accepted answer gets ``interval`` = the charge point's desired
        HeartbeatInterval when one is set (OCPP 1.6 §4.2: the charge point adopts the
        interval of the BootNotification answer as its heartbeat interval, so sending
        anything else would undo the desired value at every boot), and schedules the
        after-boot synchronization.
        """

        async def boot_notification(ctx: CallContext, payload: dict[str, Any]) -> dict[str, Any]:
            result = await handler(ctx, payload)
            if result.get("status") != "Accepted":
                return result
            charge_point_id = ctx.charge_point_id
            desired = await self.desired_value(charge_point_id, "HeartbeatInterval")
            if desired is not None and desired.strip().isdigit():
                result = {**result, "interval": int(desired.strip())}
            self.booted(charge_point_id)
            return result

        return boot_notification

    def booted(self, charge_point_id: str) -> None:
        """An Accepted BootNotification is being answered: synchronize afterwards."""
        if not (self.sync_on_boot or self.apply_on_boot) or self._answered is None:
            return
        if self._closed:
            return
        previous = self._after_boot_tasks.pop(charge_point_id, None)
        if previous is not None:
            previous.cancel()
        task = asyncio.get_running_loop().create_task(self._after_boot(charge_point_id))
        self._after_boot_tasks[charge_point_id] = task

        def done(finished: asyncio.Task[None]) -> None:
            if self._after_boot_tasks.get(charge_point_id) is finished:
                del self._after_boot_tasks[charge_point_id]

        task.add_done_callback(done)

    async def _after_boot(self, charge_point_id: str) -> None:
        assert self._answered is not None
        try:
            await self._answered(charge_point_id)
            if self.sync_on_boot:
                await self.refresh(charge_point_id, origin=Origin.BOOT)
            if self.apply_on_boot:
                await self.apply(charge_point_id, origin=Origin.BOOT, refresh=not self.sync_on_boot)
        except asyncio.CancelledError:
            raise
        except CALL_FAILURES as exc:
            # A charge point that is gone again is no news; anything else is.
            level = logging.INFO if isinstance(exc, NotConnected) else logging.WARNING
            log.log(
                level,
                "configuration synchronization after boot failed",
                extra={"charge_point": charge_point_id, "reason": _describe(exc)},
            )
        except Exception:
            log.exception(
                "configuration synchronization after boot failed",
                extra={"charge_point": charge_point_id},
            )

    async def close(self) -> None:
        """Cancel the after-boot synchronizations still running; start no more."""
        self._closed = True
        tasks = list(self._after_boot_tasks.values())
        self._after_boot_tasks.clear()
        for task in tasks:
            task.cancel()
        for task in tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
