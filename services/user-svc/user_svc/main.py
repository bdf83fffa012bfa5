import asyncio
import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import UTC, datetime
from uuid import uuid4

from argon2 import PasswordHasher
from argon2 import Type as Argon2Type
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from fastapi import FastAPI
from sqlalchemy.exc import DBAPIError

from kit.app import Runtime, create_service_app
from kit.auth import TokenSigner, TokenVerifier
from kit.db import unit_of_work
from kit.periodic import run_periodically
from user_svc.admins.endpoints import router as admin_router
from user_svc.admins.service import ensure_bootstrap_admin
from user_svc.audit_trail.consumer import consumer_spec as audit_trail_consumer
from user_svc.audit_trail.endpoints import router as audit_trail_router
from user_svc.auth.endpoints import router as auth_router
from user_svc.clients.endpoints import router as clients_router
from user_svc.codes.endpoints import dev_router
from user_svc.codes.endpoints import router as codes_router
from user_svc.codes.provider import NoProvider, SandboxProvider
from user_svc.context import UserServiceContext
from user_svc.deregistration.projection import consumer_spec as obligations_consumer
from user_svc.deregistration.service import anonymise_due
from user_svc.oauth.endpoints import router as oauth_router
from user_svc.retention import prune_expired
from user_svc.security import Passwords, Tokens
from user_svc.settings import Settings
from user_svc.staff.endpoints import router as staff_router
from user_svc.staff.totp import TotpSecrets
from user_svc.terms.endpoints import router as terms_router
from user_svc.terms.service import load_terms
from user_svc.texting.consumers import consumer_spec as texts_consumer
from user_svc.users.endpoints import router as users_router

log = logging.getLogger(__name__)


def create_app(settings: Settings | None = None) -> FastAPI:
    settings = settings or Settings()  # reads JWT_PRIVATE_KEY_FILE and the rest from the environment

    @asynccontextmanager
    async def lifespan(runtime: Runtime) -> AsyncIterator[None]:
        private_pem = settings.jwt_private_key_file.read_bytes()
        if runtime.verifier is None:
            runtime.verifier = TokenVerifier(
                _public_pem(private_pem), settings.jwt_issuer, settings.jwt_audience, runtime.revocations
            )
        tokens = Tokens(
            TokenSigner(private_pem, settings.jwt_issuer, settings.jwt_audience, settings.access_token_ttl_s),
            TokenSigner(private_pem, settings.jwt_issuer, settings.jwt_audience, settings.admin_access_token_ttl_s),
        )
        # Fail at startup, not at the first login, when the two key files do not belong together.
        runtime.verifier.verify(tokens.for_user(str(uuid4())).access_token)
        hasher = PasswordHasher(
            time_cost=settings.password_hash_time_cost,
            memory_cost=settings.password_hash_memory_kib,
            parallelism=settings.password_hash_parallelism,
            type=Argon2Type.ID,
        )
        context = UserServiceContext(
            settings=settings,
            passwords=await asyncio.to_thread(Passwords, hasher, settings.password_hash_concurrency),
            tokens=tokens,
            terms=load_terms(settings.terms_version, settings.terms_text_file),
            provider=SandboxProvider(
                runtime.sessionmaker,
                fail_destinations=frozenset(settings.sms_sandbox_fail_numbers),
                failure_rate=settings.sms_sandbox_failure_rate,
            )
            if settings.sms_provider == "sandbox"
            else NoProvider(),
            totp=TotpSecrets(settings.admin_totp_key.get_secret_value(), settings.admin_totp_issuer),
        )
        context.install(runtime.extras)
        await _bootstrap_admin(runtime, context)
        if settings.anonymise_interval_s > 0:

            async def anonymise() -> None:
                await _anonymise(runtime, settings)

            runtime.spawn(
                run_periodically(anonymise, name="anonymiser", interval_s=settings.anonymise_interval_s), "anonymiser"
            )
        if settings.user_retention_interval_s > 0:

            async def prune() -> None:
                await prune_expired(runtime.sessionmaker, settings, now=datetime.now(UTC))

            runtime.spawn(
                run_periodically(prune, name="user-retention", interval_s=settings.user_retention_interval_s),
                "user-retention",
            )
        yield

    routers = [
        terms_router,
        users_router,
        auth_router,
        codes_router,
        admin_router,
        staff_router,
        audit_trail_router,
        clients_router,
        oauth_router,
    ]
    if settings.pb_env != "production":
        routers.append(dev_router)  # the sandbox provider's outbox: never served in production
    return create_service_app(
        settings,
        title="user-svc",
        routers=routers,
        consumers=lambda rt: [
            *([obligations_consumer(rt)] if settings.obligations_consumer else []),
            *([texts_consumer(rt)] if settings.sms_commands_consumer else []),
            *([audit_trail_consumer(rt)] if settings.audit_trail_consumer else []),
        ],
        extra_lifespan=lifespan,
    )


def _public_pem(private_pem: bytes) -> bytes:
    key = serialization.load_pem_private_key(private_pem, password=None)
    if not isinstance(key, Ed25519PrivateKey):
        raise RuntimeError("JWT_PRIVATE_KEY_FILE must hold an Ed25519 private key")
    return key.public_key().public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)


async def _bootstrap_admin(runtime: Runtime, context: UserServiceContext, attempts: int = 20) -> None:
    login, password = context.settings.admin_bootstrap_login, context.settings.admin_bootstrap_password
    if login is None or password is None:
        return
    for attempt in range(1, attempts + 1):
        try:
            async with unit_of_work(runtime.sessionmaker) as session:
                await ensure_bootstrap_admin(
                    session, login=login, password=password.get_secret_value(), passwords=context.passwords
                )
            return
        except (OSError, DBAPIError) as exc:
            if attempt == attempts:
                raise
            log.warning("database not reachable for the admin bootstrap (%s); retrying", exc)
            await asyncio.sleep(min(0.25 * attempt, 2.0))


async def _anonymise(runtime: Runtime, settings: Settings) -> None:
    """Clear the personal data of users deregistered longer ago than the retention period."""
    async with unit_of_work(runtime.sessionmaker) as session:
        count = await anonymise_due(session, now=datetime.now(UTC), retention_s=settings.deregistration_retention_s)
    if count:
        log.info("deregistered users anonymised", extra={"count": count})
