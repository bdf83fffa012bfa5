from datetime import datetime
from typing import Annotated, Literal
from uuid import UUID

from fastapi import APIRouter, Depends, Response, status
from pydantic import AfterValidator, BaseModel, Field, model_validator
from pydantic_core import PydanticCustomError

from contracts.regions import is_division_code
from kit.app import RuntimeDep
from kit.auth import ALL_PERMISSIONS, ROLE_PERMISSIONS, SUPERVISION_SCOPE, Principal, is_supervision_scope
from kit.db import SessionDep
from kit.ratelimit import rate_class
from user_svc.admins.endpoints import admin_with
from user_svc.clients import service
from user_svc.context import ContextDep
from user_svc.validators import PlainText

router = APIRouter(tags=["clients"])

_PERMISSIONS = sorted({p for perms in ROLE_PERMISSIONS.values() for p in perms} - {ALL_PERMISSIONS})
KNOWN_SCOPES = [*_PERMISSIONS, SUPERVISION_SCOPE, "supervision:region:<division code>"]


def _known_scope(value: str) -> str:
    region = value.removeprefix("supervision:region:")
    if region != value and is_division_code(region):
        return value
    if value not in KNOWN_SCOPES or "<" in value:
        raise PydanticCustomError("unknown_scope", "Unknown scope; known: {known}", {"known": " ".join(KNOWN_SCOPES)})
    return value


Scope = Annotated[str, Field(max_length=40), AfterValidator(_known_scope)]

KeyManager = Annotated[Principal, Depends(admin_with("clients:manage"))]


class NewApiKeyIn(BaseModel):
    name: PlainText = Field(min_length=1, max_length=100)
    scopes: list[Scope] = Field(min_length=1, max_length=len(KNOWN_SCOPES) + 50)

    @model_validator(mode="after")
    def _supervision_keys_hold_nothing_else(self) -> "NewApiKeyIn":
        supervision = [s for s in self.scopes if is_supervision_scope(s)]
        if supervision and (len(supervision) != len(self.scopes) or SUPERVISION_SCOPE not in supervision):
            raise PydanticCustomError(
                "supervision_scopes_mixed",
                "A supervision key holds supervision:read (and region scopes) only",
            )
        return self


class ApiKeyOut(BaseModel):
    key_id: UUID
    name: str
    scopes: list[str]
    created_at: datetime
    revoked: bool


class NewApiKeyOut(ApiKeyOut):
    api_key: str = Field(description="shown once; keep it secret")


class ClientTokenIn(BaseModel):
    api_key: str = Field(min_length=1, max_length=200)


class ClientTokenOut(BaseModel):
    access_token: str
    token_type: Literal["bearer"] = "bearer"
    expires_in: int
    scope: str


@router.post("/v1/admin/api-keys", status_code=status.HTTP_201_CREATED)
async def create_api_key(
    actor: KeyManager, body: NewApiKeyIn, session: SessionDep, runtime: RuntimeDep
) -> NewApiKeyOut:
    key, secret = await service.create(session, actor, name=body.name, scopes=list(body.scopes), events=runtime)
    return NewApiKeyOut(
        key_id=key.id, name=key.name, scopes=key.scopes, created_at=key.created_at, revoked=False, api_key=secret
    )


@router.get("/v1/admin/api-keys")
async def list_api_keys(_: KeyManager, session: SessionDep) -> list[ApiKeyOut]:
    return [
        ApiKeyOut(key_id=k.id, name=k.name, scopes=k.scopes, created_at=k.created_at, revoked=k.revoked_at is not None)
        for k in await service.listing(session)
    ]


@router.delete("/v1/admin/api-keys/{key_id}", status_code=status.HTTP_204_NO_CONTENT)
async def revoke_api_key(actor: KeyManager, key_id: UUID, session: SessionDep, runtime: RuntimeDep) -> None:
    await service.revoke(session, actor, key_id, events=runtime)


@router.post("/v1/client-sessions", dependencies=[rate_class("login")])
async def client_token(
    body: ClientTokenIn, session: SessionDep, context: ContextDep, response: Response
) -> ClientTokenOut:
    """Exchange an API key for a short-lived access token carrying the key's scopes."""
    response.headers["Cache-Control"] = "no-store"
    token, scopes = await service.exchange(session, body.api_key, context.tokens)
    return ClientTokenOut(access_token=token.access_token, expires_in=token.expires_in, scope=" ".join(scopes))
