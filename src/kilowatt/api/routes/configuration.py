"""Charge point configuration: reported, desired, drift, changes, templates.

Refusals before anything is sent (one error shape, see :mod:`kilowatt.api.errors`):
a read-only key is **409** ``read_only`` (the request is well formed, the key's state
forbids it); a value of the wrong type or out of range **422** ``invalid_value``; a
write-only key as a desired value **422** ``write_only``. An answer of the charge
point (Accepted, Rejected, RebootRequired, NotSupported) is always **200** with its
status: the CALL itself succeeded.
"""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any, Literal

from fastapi import APIRouter, FastAPI, Path, Query, Request, Response
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ConfigDict, Field

from kilowatt.api.deps import Admin, ApiContext, ChargePointId, Context, Reader
from kilowatt.api.errors import ApiError, error_body
from kilowatt.domain.configuration import (
    CATALOGUE,
    MAX_KEY_LENGTH,
    MAX_VALUE_LENGTH,
    ChangeRecord,
    ConfigurationTemplate,
    DriftEntry,
    InvalidValue,
    NotDesirable,
    ReadOnlyKey,
    definition,
    is_secret,
)
from kilowatt.services.configuration import (
    ChangeOutcome,
    ConfigurationService,
    ConfigurationView,
    UnknownTemplate,
)

__all__ = ["install"]

charge_point_router = APIRouter(
    prefix="/api/v1/charge-points/{charge_point_id}", tags=["configuration"]
)
templates_router = APIRouter(prefix="/api/v1/configuration-templates", tags=["configuration"])
catalogue_router = APIRouter(prefix="/api/v1/configuration-keys", tags=["configuration"])

Key = Annotated[
    str,
    Path(
        min_length=1,
        max_length=MAX_KEY_LENGTH,
        description="A configuration key (OCPP 1.6 §9) or a vendor-specific one",
    ),
]
TemplateName = Annotated[str, Path(min_length=1, max_length=50)]
Timeout = Annotated[
    float | None,
    Query(gt=0, le=300, description="Seconds to wait for the answer (default: call_timeout)"),
]


def _service(ctx: ApiContext) -> ConfigurationService:
    if ctx.configuration is None:  # pragma: no cover - the composition root sets it
        raise ApiError(503, "unavailable", "configuration management is not available")
    return ctx.configuration


def _no_template(name: str) -> ApiError:
    return ApiError(
        404,
        "not_found",
        f"there is no configuration template {name!r}; create it with "
        "POST /api/v1/configuration-templates",
    )


# ------------------------------------------------------------ representations


class ValueIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    value: str = Field(max_length=MAX_VALUE_LENGTH, description="The value, always as text")


class ReportedOut(BaseModel):
    key: str
    value: str | None = Field(description="None: no value, or a write-only key (never kept)")
    readonly: bool | None
    unknown: bool = Field(description="The charge point answered unknownKey for it")
    reported_at: datetime
    profile: str | None = Field(description="Feature profile (None: vendor-specific key)")
    type: str = Field(description="boolean, integer, CSL or string (vendor keys: string)")


class DesiredOut(BaseModel):
    key: str
    value: str
    source: str = Field(description="charge-point (its own value) or template")
    template: str | None = None


class DriftOut(BaseModel):
    key: str
    desired: str
    reported: str | None
    status: str = Field(
        description="differs, not_reported, unknown_key, read_only (cannot be applied) or "
        "reboot_pending (set, waiting for a reboot)"
    )
    source: str
    template: str | None = None

    @classmethod
    def of(cls, entry: DriftEntry) -> DriftOut:
        return cls(
            key=entry.key,
            desired=entry.desired,
            reported=entry.reported,
            status=entry.status.value,
            source=entry.source,
            template=entry.template,
        )


class AnswerOut(BaseModel):
    key: str
    value: str | None = Field(description="None for a write-only key: only that it was set")
    secret: bool
    status: str | None = Field(description="Accepted, Rejected, RebootRequired, NotSupported")
    error: str | None = Field(description="Why there was no answer (timeout, CALLERROR)")
    origin: str = Field(description="api, apply, boot or call (the generic calls endpoint)")
    requested_at: datetime
    answered_at: datetime | None

    @classmethod
    def of(cls, change: ChangeRecord) -> AnswerOut:
        return cls(
            key=change.key,
            value=None if change.secret else change.value,
            secret=change.secret,
            status=change.status,
            error=change.error,
            origin=change.origin,
            requested_at=change.requested_at,
            answered_at=change.answered_at,
        )


class ConfigurationOut(BaseModel):
    charge_point_id: str
    template: str | None
    synced_at: datetime | None = Field(description="Last complete GetConfiguration")
    sync_error: str | None
    sync_error_at: datetime | None
    last_boot_at: datetime | None
    reboot_required: bool = Field(
        description="A change was answered RebootRequired since the last boot"
    )
    pending_reboot: list[str] = Field(description="The keys waiting for a reboot")
    reported: list[ReportedOut]
    unknown_keys: list[str]
    desired: list[DesiredOut]
    drift: list[DriftOut]
    last_answers: list[AnswerOut] = Field(description="The last ChangeConfiguration per key")
    capabilities: dict[str, Any] = Field(
        description="What the charge point reported about itself (None: not reported)"
    )

    @classmethod
    def of(cls, view: ConfigurationView) -> ConfigurationOut:
        reported = []
        for entry in view.reported:
            if entry.unknown:
                continue
            known = definition(entry.key)
            reported.append(
                ReportedOut(
                    key=entry.key,
                    value=None if is_secret(entry.key) else entry.value,
                    readonly=entry.readonly,
                    unknown=False,
                    reported_at=entry.reported_at,
                    profile=known.profile.value if known is not None else None,
                    type=known.type.value if known is not None else "string",
                )
            )
        sync = view.sync
        return cls(
            charge_point_id=view.charge_point_id,
            template=view.template,
            synced_at=sync.synced_at if sync is not None else None,
            sync_error=sync.error if sync is not None else None,
            sync_error_at=sync.error_at if sync is not None else None,
            last_boot_at=view.last_boot_at,
            reboot_required=view.reboot_required,
            pending_reboot=sorted(view.pending_reboot),
            reported=reported,
            unknown_keys=[entry.key for entry in view.reported if entry.unknown],
            desired=[
                DesiredOut(key=d.key, value=d.value, source=d.source, template=d.template)
                for d in view.desired.values()
            ],
            drift=[DriftOut.of(entry) for entry in view.drift],
            last_answers=[AnswerOut.of(change) for change in view.last_answers],
            capabilities=view.capabilities.as_dict(),
        )


class ResetOut(BaseModel):
    type: str
    status: str | None
    error: str | None


class ChangeOut(BaseModel):
    key: str
    value: str | None = Field(description="The value sent (None for a write-only key)")
    secret: bool
    status: str | None = Field(description="The charge point's answer")
    error: str | None = None
    reset: ResetOut | None = Field(None, description="The Reset sent after RebootRequired")

    @classmethod
    def of(cls, outcome: ChangeOutcome) -> ChangeOut:
        reset = outcome.reset
        return cls(
            key=outcome.key,
            value=None if outcome.secret else outcome.value,
            secret=outcome.secret,
            status=outcome.status,
            error=outcome.error,
            reset=None
            if reset is None
            else ResetOut(type=reset.type, status=reset.status, error=reset.error),
        )


class ApplyOut(BaseModel):
    changes: list[ChangeOut]
    skipped: list[DriftOut] = Field(
        description="Drift not sent: read-only, unknown to the charge point, or set already "
        "and waiting for a reboot"
    )


class DesiredValueOut(BaseModel):
    key: str
    value: str


class TemplateAssignment(BaseModel):
    model_config = ConfigDict(extra="forbid")

    template: str | None = Field(max_length=50, description="A template name; null: none")


class TemplateIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: str = Field(min_length=1, max_length=50, pattern=r"^[^\s/][^/]*$")
    description: str | None = Field(None, max_length=500)


class TemplateOut(BaseModel):
    name: str
    description: str | None
    values: dict[str, str]
    members: list[str]
    created_at: datetime | None
    updated_at: datetime | None

    @classmethod
    def of(cls, template: ConfigurationTemplate) -> TemplateOut:
        return cls(
            name=template.name,
            description=template.description,
            values=dict(template.values),
            members=list(template.members),
            created_at=template.created_at,
            updated_at=template.updated_at,
        )


# ------------------------------------------------------------- charge points


@charge_point_router.get(
    "/configuration",
    summary="The charge point's configuration: reported, desired, drift, last answers",
)
async def show(ctx: Context, token: Reader, charge_point_id: ChargePointId) -> ConfigurationOut:
    return ConfigurationOut.of(await _service(ctx).view(charge_point_id))


@charge_point_router.post(
    "/configuration/refresh",
    summary="Fetch the configuration from the charge point (GetConfiguration)",
    description="Without `key`, every key (the stored report is replaced); with `key` "
    "(repeatable) only those, in batches of the charge point's GetConfigurationMaxKeys. "
    "409 not connected; 502 CALLERROR; 504 no answer in time.",
)
async def refresh(
    ctx: Context,
    token: Admin,
    charge_point_id: ChargePointId,
    key: Annotated[list[str] | None, Query(max_length=100)] = None,
    timeout: Timeout = None,
) -> ConfigurationOut:
    view = await _service(ctx).refresh(charge_point_id, key, timeout=timeout)
    return ConfigurationOut.of(view)


@charge_point_router.put(
    "/configuration/{key}",
    summary="Change one key on the charge point (ChangeConfiguration)",
    description="The value is checked against the OCPP 1.6 catalogue before it is sent: "
    "409 `read_only` for a read-only key, 422 `invalid_value` for a wrong type or range. "
    "The charge point's answer is recorded and returned with 200, whatever it is "
    "(Accepted, Rejected, RebootRequired, NotSupported). With `reset=Soft|Hard`, an answer "
    "RebootRequired is followed by a Reset of that type. A write-only key (AuthorizationKey) "
    "is never returned or stored in clear.",
)
async def change(
    ctx: Context,
    token: Admin,
    charge_point_id: ChargePointId,
    key: Key,
    body: ValueIn,
    reset: Annotated[
        Literal["Soft", "Hard"] | None,
        Query(description="Reset the charge point this way if it answers RebootRequired"),
    ] = None,
    timeout: Timeout = None,
) -> ChangeOut:
    outcome = await _service(ctx).change(
        charge_point_id, key, body.value, reset=reset, timeout=timeout
    )
    return ChangeOut.of(outcome)


@charge_point_router.post(
    "/configuration/apply",
    summary="Send the drift: every desired value the charge point does not have",
)
async def apply(
    ctx: Context, token: Admin, charge_point_id: ChargePointId, timeout: Timeout = None
) -> ApplyOut:
    result = await _service(ctx).apply(charge_point_id, timeout=timeout)
    return ApplyOut(
        changes=[ChangeOut.of(outcome) for outcome in result.changes],
        skipped=[DriftOut.of(entry) for entry in result.skipped],
    )


@charge_point_router.put(
    "/configuration/desired/{key}",
    summary="Set a desired value for this charge point (wins over its template)",
    description="Stored, not sent: see the drift, and apply it. 409 `read_only` for a key "
    "the catalogue marks read-only; 422 `write_only` for AuthorizationKey (never stored).",
)
async def set_desired(
    ctx: Context, token: Admin, charge_point_id: ChargePointId, key: Key, body: ValueIn
) -> DesiredValueOut:
    value = await _service(ctx).set_desired(charge_point_id, key, body.value)
    return DesiredValueOut(key=key, value=value)


@charge_point_router.delete(
    "/configuration/desired/{key}",
    status_code=204,
    summary="Remove this charge point's own desired value (its template's applies again)",
)
async def remove_desired(
    ctx: Context, token: Admin, charge_point_id: ChargePointId, key: Key
) -> Response:
    if not await _service(ctx).remove_desired(charge_point_id, key):
        raise ApiError(
            404, "not_found", f"charge point {charge_point_id!r} has no desired value for {key}"
        )
    return Response(status_code=204)


@charge_point_router.put(
    "/configuration-template",
    summary="Give the charge point a configuration template (null: none)",
)
async def assign_template(
    ctx: Context, token: Admin, charge_point_id: ChargePointId, body: TemplateAssignment
) -> ConfigurationOut:
    service = _service(ctx)
    await service.assign_template(charge_point_id, body.template)
    return ConfigurationOut.of(await service.view(charge_point_id))


# ----------------------------------------------------------------- templates


@templates_router.get("", summary="List configuration templates")
async def list_templates(ctx: Context, token: Reader) -> list[TemplateOut]:
    return [TemplateOut.of(template) for template in await _service(ctx).list_templates()]


@templates_router.post("", status_code=201, summary="Create a configuration template")
async def create_template(ctx: Context, token: Admin, body: TemplateIn) -> TemplateOut:
    service = _service(ctx)
    await service.add_template(body.name, body.description)
    return await show_template(ctx, token, body.name)


@templates_router.get("/{name}", summary="Show a configuration template")
async def show_template(ctx: Context, token: Reader, name: TemplateName) -> TemplateOut:
    template = await _service(ctx).get_template(name)
    if template is None:
        raise _no_template(name)
    return TemplateOut.of(template)


@templates_router.delete("/{name}", status_code=204, summary="Delete a configuration template")
async def delete_template(ctx: Context, token: Admin, name: TemplateName) -> Response:
    if not await _service(ctx).remove_template(name):
        raise _no_template(name)
    return Response(status_code=204)


@templates_router.put("/{name}/values/{key}", summary="Set a value of a template")
async def set_template_value(
    ctx: Context, token: Admin, name: TemplateName, key: Key, body: ValueIn
) -> TemplateOut:
    service = _service(ctx)
    await service.set_template_value(name, key, body.value)
    return await show_template(ctx, token, name)


@templates_router.delete(
    "/{name}/values/{key}", status_code=204, summary="Remove a value from a template"
)
async def remove_template_value(
    ctx: Context, token: Admin, name: TemplateName, key: Key
) -> Response:
    if not await _service(ctx).remove_template_value(name, key):
        raise ApiError(404, "not_found", f"template {name!r} has no value for {key}")
    return Response(status_code=204)


# ----------------------------------------------------------------- catalogue


@catalogue_router.get(
    "", summary="The standard OCPP 1.6 configuration keys (§9, errata, Security Whitepaper)"
)
async def catalogue(token: Reader) -> list[dict[str, Any]]:
    return [key.describe() for key in CATALOGUE.values()]


# -------------------------------------------------------------------- wiring


def install(app: FastAPI) -> None:
    """Add the routes, and the answers to the refusals of the configuration service
    (also raised through the generic ``POST …/calls/ChangeConfiguration``)."""
    app.include_router(charge_point_router)
    app.include_router(templates_router)
    app.include_router(catalogue_router)

    @app.exception_handler(ReadOnlyKey)
    async def read_only(request: Request, exc: ReadOnlyKey) -> JSONResponse:
        return JSONResponse(error_body("read_only", exc.message, exc.details), status_code=409)

    @app.exception_handler(InvalidValue)
    async def invalid_value(request: Request, exc: InvalidValue) -> JSONResponse:
        return JSONResponse(error_body("invalid_value", exc.message, exc.details), status_code=422)

    @app.exception_handler(NotDesirable)
    async def write_only(request: Request, exc: NotDesirable) -> JSONResponse:
        return JSONResponse(error_body("write_only", exc.message, exc.details), status_code=422)

    @app.exception_handler(UnknownTemplate)
    async def unknown_template(request: Request, exc: UnknownTemplate) -> JSONResponse:
        error = _no_template(str(exc))
        return JSONResponse(error_body(error.code, error.message), status_code=error.status)
