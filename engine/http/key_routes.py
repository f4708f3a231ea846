"""The API keys over HTTP, for a key with the `admin` scope: make one (shown once), list them,
revoke one. The same as `billing-engine keys create | list | revoke` (engine/keys.py)."""

from __future__ import annotations

import enum

from fastapi import APIRouter, Path, Request
from pydantic import Field

import engine.http.contract as m
from actors.errors import KeyInUse
from engine import keys
from engine.http.answers import answer
from engine.http.door import ADMIN
from engine.http.routes import pool_of

Scope = enum.StrEnum("Scope", {s: s for s in keys.SCOPES})
Scope.__doc__ = "what a key may do"


class NewKey(m.Body):
    name: str = Field(pattern=f"^{keys.NAME_PATTERN}$", examples=["app-2026-12"])
    scopes: list[Scope] = Field(min_length=1, examples=[["read", "calls"]])


class ApiKey(m.Answer):
    name: str
    scopes: list[Scope]
    created_at: m.Timestamp
    revoked_at: m.Timestamp | None = Field(description="null while the key is live")


class NewKeyMade(ApiKey):
    key: str = Field(description="the key itself: shown in this answer only, never again")


class KeysPage(m.Answer):
    keys: list[ApiKey]


router = APIRouter()
KeyName = Path(pattern=f"^{keys.NAME_PATTERN}$", description="the key's name")


@router.post(
    "/v1/keys",
    summary="make an API key: the key is in this answer only",
    status_code=201,
    response_model=NewKeyMade,
    responses=m.errors(409),
    openapi_extra=ADMIN,
    operation_id="create_key",
    tags=["keys"],
)
async def create_key(request: Request, body: NewKey):
    return answer(await keys.create(await pool_of(request), body.name, body.scopes), 201)


@router.get(
    "/v1/keys",
    summary="every key made, live ones first (names and scopes, never the keys)",
    response_model=KeysPage,
    responses=m.errors(),
    openapi_extra=ADMIN,
    operation_id="list_keys",
    tags=["keys"],
)
async def list_keys(request: Request):
    return answer({"keys": await keys.listed(await pool_of(request))})


@router.post(
    "/v1/keys/{name}/revoke",
    summary="revoke a key: refused on every replica within a second; idempotent",
    response_model=ApiKey,
    responses=m.errors(404, 409),
    openapi_extra=ADMIN,
    operation_id="revoke_key",
    tags=["keys"],
)
async def revoke_key(request: Request, name: str = KeyName):
    if name == getattr(request.state, "api_key", None):
        raise KeyInUse(f"key {name!r} is the one asking: revoke it with another admin key")
    return answer(await keys.revoke(await pool_of(request), name))
