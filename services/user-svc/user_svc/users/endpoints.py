from fastapi import APIRouter, Request, Response, status

from kit.app import RuntimeDep
from kit.auth import user_scope
from kit.db import SessionDep
from kit.errors import BusinessError, problem
from kit.ratelimit import rate_class
from user_svc.codes import service as codes
from user_svc.codes.endpoints import client_address
from user_svc.codes.schemas import CodeSentOut, EmailCodeIn
from user_svc.context import ContextDep
from user_svc.deregistration import service as deregistration
from user_svc.errors import PhoneTaken, RegistrationRejected
from user_svc.models import User
from user_svc.sessions.deps import SignedInUser
from user_svc.users import service
from user_svc.users.eligibility import Verdict
from user_svc.users.schemas import (
    AcceptTermsIn,
    BindEmailIn,
    ChangePasswordIn,
    DeregisteredOut,
    DeregisterIn,
    ProfilePatchIn,
    RegisteredUserOut,
    RegisterUserIn,
    UserProfileOut,
)

router = APIRouter(prefix="/v1/users", tags=["users"])


@router.post(
    "",
    status_code=status.HTTP_201_CREATED,
    dependencies=[rate_class("registration")],
    response_model=RegisteredUserOut,
    responses={403: {"description": "registration_rejected, with `reasons`"}, 409: {"description": "phone_taken"}},
)
async def register_user(
    body: RegisterUserIn, session: SessionDep, context: ContextDep, runtime: RuntimeDep
) -> RegisteredUserOut | Response:
    """Register with a phone number, the code sent to it (`POST /v1/sms-codes`, purpose `register`),
    a password and acceptance of the current terms. The eligibility audit may reject it: the answer
    names the reasons (duplicate_identity, number_blocked, credit_blacklisted, under_minimum_age)."""
    result = await service.register(
        session,
        runtime.sessionmaker,
        body,
        terms=context.terms,
        passwords=context.passwords,
        events=runtime,
        settings=context.settings,
    )
    if isinstance(result, Verdict):
        # Answered, not raised: the recorded decision commits with this request.
        error: BusinessError = PhoneTaken() if result.reasons == ["duplicate_identity"] else RegistrationRejected()
        return problem(error.status, error.code, error.title, error.detail, reasons=result.reasons)
    return RegisteredUserOut(
        user_id=result.id, phone=result.phone, display_name=result.display_name, registered_at=result.registered_at
    )


def _profile(user: User, current_terms: str) -> UserProfileOut:
    return UserProfileOut(
        user_id=user.id,
        phone=user.phone,
        email=user.email,
        username=user.username,
        display_name=user.display_name,
        status=user.status,
        registered_at=user.registered_at,
        terms_version=user.terms_version,
        terms_accepted_at=user.terms_accepted_at,
        terms_update_required=user.terms_version != current_terms,
    )


@router.get("/me", dependencies=[user_scope("profile")])
async def my_profile(principal: SignedInUser, session: SessionDep, context: ContextDep) -> UserProfileOut:
    return _profile(await service.profile(session, principal.user_id), context.terms.version)


@router.patch("/me", dependencies=[user_scope("profile")])
async def edit_my_profile(
    body: ProfilePatchIn, principal: SignedInUser, session: SessionDep, context: ContextDep
) -> UserProfileOut:
    """Change the display name and/or user name (send only what changes; null clears)."""
    return _profile(await service.edit_profile(session, principal.user_id, body), context.terms.version)


@router.post("/me/password", status_code=status.HTTP_204_NO_CONTENT)
async def change_my_password(
    body: ChangePasswordIn, principal: SignedInUser, session: SessionDep, context: ContextDep, runtime: RuntimeDep
) -> None:
    """Change the password; every refresh token of the account is revoked."""
    await service.change_password(
        session,
        principal.user_id,
        current=body.current_password,
        new=body.new_password,
        passwords=context.passwords,
        settings=context.settings,
        events=runtime,
    )


@router.post("/me/email-codes", status_code=status.HTTP_202_ACCEPTED, dependencies=[rate_class("sms")])
async def send_email_code(
    body: EmailCodeIn,
    principal: SignedInUser,
    request: Request,
    session: SessionDep,
    context: ContextDep,
    runtime: RuntimeDep,
) -> CodeSentOut:
    """Send a code to an e-mail address, to bind it with `PUT /v1/users/me/email`."""
    await service.profile(session, principal.user_id)
    sent = await codes.send_code(
        session,
        runtime.sessionmaker,
        channel="email",
        destination=body.email,
        purpose="bind_email",
        client_ip=client_address(request),
        settings=context.settings,
        provider=context.provider,
    )
    return CodeSentOut(expires_in=sent.expires_in, resend_after=sent.resend_after)


@router.put("/me/email")
async def bind_my_email(
    body: BindEmailIn, principal: SignedInUser, session: SessionDep, context: ContextDep, runtime: RuntimeDep
) -> UserProfileOut:
    user = await service.bind_email(
        session, runtime.sessionmaker, principal.user_id, email=body.email, code=body.code, settings=context.settings
    )
    return _profile(user, context.terms.version)


@router.post("/me/terms")
async def accept_current_terms(
    body: AcceptTermsIn, principal: SignedInUser, session: SessionDep, context: ContextDep
) -> UserProfileOut:
    """Accept the current terms version (when a login answered `terms_update_required`)."""
    user = await service.accept_terms(
        session, principal.user_id, terms=context.terms, accepted=body.terms_accepted, version=body.terms_version
    )
    return _profile(user, context.terms.version)


@router.post("/me/deregistration")
async def deregister_me(
    body: DeregisterIn, principal: SignedInUser, session: SessionDep, context: ContextDep, runtime: RuntimeDep
) -> DeregisteredOut:
    """Close the account (needs the password). Refused while a rental is active (`rental_active`) or a
    fee is unpaid (`debt_unpaid`); every session ends; the deposit is refunded by asset-credit."""
    at = await deregistration.deregister(
        session,
        principal.user_id,
        password=body.password,
        passwords=context.passwords,
        events=runtime,
        settings=context.settings,
    )
    return DeregisteredOut(user_id=principal.user_id, deregistered_at=at)
