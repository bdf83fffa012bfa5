from typing import Annotated, Any

from fastapi import APIRouter, Depends, Path, Query, Request, Response, status

from kit.app import RuntimeDep
from kit.auth import USER_SCOPES, Principal
from kit.db import SessionDep
from kit.errors import problem
from kit.ratelimit import rate_class
from user_svc.admins.endpoints import admin_with
from user_svc.context import ContextDep
from user_svc.errors import TokenError
from user_svc.models import OAuthClient
from user_svc.oauth import service
from user_svc.oauth.schemas import (
    AuthorizationRequestOut,
    AuthorizeIn,
    AuthorizeQuery,
    ClientOut,
    ConsentOut,
    GrantOut,
    NewClientIn,
    NewClientOut,
    RedirectOut,
    ScopeOut,
    TokenOut,
)
from user_svc.sessions.deps import SignedInUser

router = APIRouter(tags=["client applications (OAuth 2.0)"])

ClientManager = Annotated[Principal, Depends(admin_with("clients:manage"))]
ClientIdPath = Annotated[str, Path(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9_.-]+$")]

_NO_STORE = {"Cache-Control": "no-store", "Pragma": "no-cache"}  # RFC 6749 5.1


def _client(client: OAuthClient) -> ClientOut:
    return ClientOut(
        client_id=client.id,
        name=client.name,
        redirect_uris=client.redirect_uris,
        scopes=client.scopes,
        confidential=client.confidential,
        created_at=client.created_at,
        disabled=client.disabled_at is not None,
    )


@router.post("/v1/admin/oauth-clients", status_code=status.HTTP_201_CREATED)
async def register_client(
    actor: ClientManager, body: NewClientIn, session: SessionDep, runtime: RuntimeDep
) -> NewClientOut:
    """Register a client application (permission `clients:manage`); a confidential one's secret is
    shown once."""
    client, secret = await service.register_client(
        session,
        actor,
        name=body.name,
        redirect_uris=list(body.redirect_uris),
        scopes=list(body.scopes),
        confidential=body.confidential,
        events=runtime,
    )
    return NewClientOut(**_client(client).model_dump(), client_secret=secret)


@router.get("/v1/admin/oauth-clients")
async def list_clients(_: ClientManager, session: SessionDep) -> list[ClientOut]:
    return [_client(c) for c in await service.list_clients(session)]


@router.delete("/v1/admin/oauth-clients/{client_id}", status_code=status.HTTP_204_NO_CONTENT)
async def disable_client(
    actor: ClientManager, client_id: ClientIdPath, session: SessionDep, context: ContextDep, runtime: RuntimeDep
) -> None:
    """Disable an application: it can no longer get tokens, and every token it holds ends now."""
    await service.disable_client(session, actor, client_id, settings=context.settings, events=runtime)


@router.get("/v1/oauth/authorize")
async def review_authorization(
    query: Annotated[AuthorizeQuery, Query()], principal: SignedInUser, session: SessionDep
) -> AuthorizationRequestOut:
    """What an application asks for, and what the user already granted it: show this to the user,
    then send their decision with `POST /v1/oauth/authorize`. The user's own token only."""
    request = await service.check_request(session, principal.user_id, query)
    consent = request.consent
    return AuthorizationRequestOut(
        client_id=request.client.id,
        client_name=request.client.name,
        redirect_uri=request.redirect_uri,
        requested_scopes=[ScopeOut(scope=s, description=USER_SCOPES[s]) for s in request.scopes],
        state=request.state,
        existing_consent=None
        if consent is None
        else ConsentOut(scopes=consent.scopes, granted_at=consent.granted_at, updated_at=consent.updated_at),
        consent_required=request.consent_required,
    )


@router.post("/v1/oauth/authorize")
async def authorize(
    body: AuthorizeIn, principal: SignedInUser, session: SessionDep, context: ContextDep
) -> RedirectOut:
    """The user's explicit decision. Approved: the consent is recorded and `redirect_to` carries a
    one-time code (valid `OAUTH_CODE_TTL_S`) and the state; denied: `error=access_denied`."""
    redirect_to = await service.decide(
        session, principal.user_id, body, approve=body.approve, settings=context.settings
    )
    return RedirectOut(redirect_to=redirect_to)


@router.get("/v1/users/me/authorizations")
async def my_authorizations(principal: SignedInUser, session: SessionDep) -> list[GrantOut]:
    """The applications the user allowed to act for them, with the scopes granted."""
    return [
        GrantOut(
            client_id=client.id,
            client_name=client.name,
            scopes=consent.scopes,
            granted_at=consent.granted_at,
            updated_at=consent.updated_at,
        )
        for consent, client in await service.grants(session, principal.user_id)
    ]


@router.delete("/v1/users/me/authorizations/{client_id}", status_code=status.HTTP_204_NO_CONTENT)
async def revoke_authorization(
    client_id: ClientIdPath, principal: SignedInUser, session: SessionDep, context: ContextDep, runtime: RuntimeDep
) -> None:
    """Withdraw an application's access: its tokens stop working in every service."""
    await service.revoke_grant(session, principal.user_id, client_id, settings=context.settings, events=runtime)


_TOKEN_FORM: dict[str, Any] = {
    "requestBody": {
        "required": True,
        "content": {
            "application/x-www-form-urlencoded": {
                "schema": {
                    "type": "object",
                    "required": ["grant_type"],
                    "properties": {
                        "grant_type": {
                            "type": "string",
                            "enum": ["authorization_code", "refresh_token", "client_credentials"],
                        },
                        "code": {"type": "string"},
                        "redirect_uri": {"type": "string"},
                        "code_verifier": {"type": "string"},
                        "refresh_token": {"type": "string"},
                        "scope": {"type": "string"},
                        "client_id": {"type": "string"},
                        "client_secret": {"type": "string"},
                    },
                }
            }
        },
    }
}


@router.post(
    "/v1/oauth/token",
    dependencies=[rate_class("login")],
    response_model=TokenOut,
    openapi_extra=_TOKEN_FORM,
    responses={
        400: {"description": "invalid_request, invalid_grant, unsupported_grant_type, invalid_scope"},
        401: {"description": "invalid_client"},
    },
)
async def token(request: Request, session: SessionDep, context: ContextDep, runtime: RuntimeDep) -> Response:
    """RFC 6749 token endpoint (form-encoded): `authorization_code` (with `code_verifier`),
    `refresh_token`, or `client_credentials` for an API key (`client_id` `pbk_<key id>`, its secret).
    Confidential clients authenticate with HTTP Basic or `client_secret`. Errors carry RFC 6749's
    `error` and `error_description` next to the problem's `code`."""
    try:
        form = service.parse_form(await request.body(), request.headers.get("content-type", ""))
        if form.get("grant_type") == "client_credentials":
            token, scopes = await service.grant_client_credentials(
                session, form, request.headers.get("Authorization"), tokens=context.tokens
            )
            out = TokenOut(access_token=token.access_token, expires_in=token.expires_in, scope=" ".join(scopes))
            return Response(out.model_dump_json(exclude_none=True), media_type="application/json", headers=_NO_STORE)
        issued = await service.grant_tokens(
            session,
            form,
            request.headers.get("Authorization"),
            tokens=context.tokens,
            settings=context.settings,
            events=runtime,
        )
    except TokenError as exc:
        # Answered, not raised: a reused code's or refresh token's revocation commits with this request.
        return problem(
            exc.status,
            exc.code,
            exc.title,
            exc.detail,
            {**_NO_STORE, **exc.headers},
            error=exc.code,
            error_description=exc.detail,
            **exc.extra,
        )
    body = TokenOut(
        access_token=issued.access_token,
        expires_in=issued.expires_in,
        refresh_token=issued.refresh_token,
        scope=" ".join(issued.scopes),
    )
    return Response(body.model_dump_json(), media_type="application/json", headers=_NO_STORE)
