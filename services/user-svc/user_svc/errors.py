from typing import Any

from kit.errors import BusinessError, Conflict, Forbidden, NotFound, Unauthorized


class TermsNotAccepted(BusinessError):
    status = 422
    code = "terms_not_accepted"
    title = "The terms of service must be accepted"


class TermsOutdated(Conflict):
    code = "terms_outdated"
    title = "The accepted terms of service are not the current version"


class PhoneTaken(Conflict):
    code = "phone_taken"
    title = "This phone number is already registered"


class InvalidCredentials(Unauthorized):
    code = "invalid_credentials"
    title = "Invalid login or password"


class UserNotFound(NotFound):
    code = "user_not_found"
    title = "No such user"


class TooManyRequests(BusinessError):
    """429 with `Retry-After` (whole seconds)."""

    status = 429
    code = "rate_limited"
    title = "Too many requests"

    def __init__(self, detail: str | None = None, *, retry_after_s: int, **extra: Any) -> None:
        retry_after_s = max(1, int(retry_after_s))
        super().__init__(detail, retry_after_s=retry_after_s, **extra)
        self.headers = {"Retry-After": str(retry_after_s)}


class LoginLocked(TooManyRequests):
    code = "login_locked"
    title = "Too many failed logins; try again later"


class CodeInvalid(BusinessError):
    status = 400
    code = "code_invalid"
    title = "The verification code is wrong, expired or used up"


class CodeDeliveryFailed(BusinessError):
    status = 502
    code = "code_delivery_failed"
    title = "The verification code could not be delivered; try again"


class InvalidRefreshToken(Unauthorized):
    code = "invalid_refresh_token"
    title = "The refresh token is not valid"


class RefreshTokenReused(Unauthorized):
    code = "refresh_token_reused"
    title = "The refresh token was already used; every session of its family has been ended"


class TokenRevoked(Unauthorized):
    code = "token_revoked"
    title = "The access token has been revoked"


class AccountNotActive(Forbidden):
    code = "account_not_active"
    title = "This account is not active"


class EmailTaken(Conflict):
    code = "email_taken"
    title = "This e-mail address belongs to another account"


class UsernameTaken(Conflict):
    code = "username_taken"
    title = "This user name is taken"


class AccountBlocked(Forbidden):
    code = "account_blocked"
    title = "This account is blocked; contact support"


class UserAlreadyBlocked(Conflict):
    code = "user_already_blocked"
    title = "The user is already blocked"


class UserNotBlocked(Conflict):
    code = "user_not_blocked"
    title = "The user is not blocked"


class AdminLoginTaken(Conflict):
    code = "admin_login_taken"
    title = "An administrator with this login exists"


class RegistrationRejected(Forbidden):
    code = "registration_rejected"
    title = "The registration did not pass the eligibility audit"


class RentalActive(Conflict):
    code = "rental_active"
    title = "Return the power bank before deregistering"


class DebtUnpaid(Conflict):
    code = "debt_unpaid"
    title = "Pay the outstanding fees before deregistering"


class ApiKeyNotFound(NotFound):
    code = "api_key_not_found"
    title = "No such active API key"
