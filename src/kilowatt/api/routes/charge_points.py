"""Charge points: register, list with connection state, show, update, delete."""

from __future__ import annotations

import asyncio

from fastapi import APIRouter, Response

from kilowatt.api.deps import Admin, ChargePointId, Context, Reader
from kilowatt.api.errors import ApiError, charge_point_not_found
from kilowatt.api.schemas import (
    ChargePointCreate,
    ChargePointPublic,
    ChargePointUpdate,
    PasswordUpdate,
    SecurityProfileUpdate,
)
from kilowatt.domain.models import Registration
from kilowatt.gateway.auth import hash_password

__all__ = ["router"]

router = APIRouter(prefix="/api/v1/charge-points", tags=["charge points"])


@router.get("", summary="List charge points with connection state and connector statuses")
async def list_charge_points(ctx: Context, token: Reader) -> list[ChargePointPublic]:
    points = await ctx.charge_points.list_charge_points()
    return [ChargePointPublic.of(point) for point in points]


@router.post("", status_code=201, summary="Register a charge point")
async def register(ctx: Context, token: Admin, body: ChargePointCreate) -> ChargePointPublic:
    password_hash = await asyncio.to_thread(hash_password, body.password) if body.password else None
    await ctx.charge_points.register(
        body.id,
        description=body.description,
        password_hash=password_hash,
        security_profile=body.security_profile,
        registration=Registration(body.registration),
    )
    point = await ctx.charge_points.get(body.id)
    assert point is not None
    return ChargePointPublic.of(point)


@router.get("/{charge_point_id}", summary="Show a charge point")
async def show(ctx: Context, token: Reader, charge_point_id: ChargePointId) -> ChargePointPublic:
    point = await ctx.charge_points.get(charge_point_id)
    if point is None:
        raise charge_point_not_found(charge_point_id)
    return ChargePointPublic.of(point)


@router.patch("/{charge_point_id}", summary="Update description or registration")
async def update(
    ctx: Context, token: Admin, charge_point_id: ChargePointId, body: ChargePointUpdate
) -> ChargePointPublic:
    fields = body.model_dump(exclude_unset=True)
    if "registration" in fields and fields["registration"] is None:
        raise ApiError(422, "validation_error", "registration cannot be null")
    if fields and not await ctx.charge_points.update(charge_point_id, **fields):
        raise charge_point_not_found(charge_point_id)
    return await show(ctx, token, charge_point_id)


@router.post("/{charge_point_id}/accept", summary="Accept a Pending charge point")
async def accept(ctx: Context, token: Admin, charge_point_id: ChargePointId) -> ChargePointPublic:
    if not await ctx.charge_points.update(charge_point_id, registration=Registration.ACCEPTED):
        raise charge_point_not_found(charge_point_id)
    return await show(ctx, token, charge_point_id)


@router.put("/{charge_point_id}/password", status_code=204, summary="Set the Basic Auth password")
async def set_password(
    ctx: Context, token: Admin, charge_point_id: ChargePointId, body: PasswordUpdate
) -> Response:
    password_hash = await asyncio.to_thread(hash_password, body.password)
    if not await ctx.charge_points.update(charge_point_id, password_hash=password_hash):
        raise charge_point_not_found(charge_point_id)
    return Response(status_code=204)


@router.put("/{charge_point_id}/security-profile", summary="Set the security profile")
async def set_security_profile(
    ctx: Context, token: Admin, charge_point_id: ChargePointId, body: SecurityProfileUpdate
) -> ChargePointPublic:
    if not await ctx.charge_points.update(charge_point_id, security_profile=body.security_profile):
        raise charge_point_not_found(charge_point_id)
    return await show(ctx, token, charge_point_id)


@router.delete("/{charge_point_id}", status_code=204, summary="Delete a charge point")
async def delete(ctx: Context, token: Admin, charge_point_id: ChargePointId) -> Response:
    if not await ctx.charge_points.remove(charge_point_id):
        raise charge_point_not_found(charge_point_id)
    return Response(status_code=204)
