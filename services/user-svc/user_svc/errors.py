from typing import Any

from kit.errors import BusinessError, Conflict, Forbidden, NotFound, TooManyRequests, Unauthorized


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


class OAuthClientNotFound(NotFound):
    code = "oauth_client_not_found"
    title = "No such enabled client application"


class OAuthGrantNotFound(NotFound):
    code = "oauth_grant_not_found"
    title = "This application has no access to the account"


# The authorization request (RFC 6749 4.1.1, RFC 7636). An unknown client or a redirect URI that is
# not registered is answered to the user, never redirected (RFC 6749 4.1.2.1).
class OAuthInvalidClient(BusinessError):
    status = 400
    code = "invalid_client"
    title = "Unknown or disabled client application"


class OAuthInvalidRedirectUri(BusinessError):
    status = 400
    code = "invalid_redirect_uri"
    title = "The redirect URI is not registered for this application"


class OAuthInvalidScope(BusinessError):
    status = 400
    code = "invalid_scope"
    title = "The requested scope is unknown or not allowed for this application"


class TokenError(BusinessError):
    """A token endpoint error (RFC 6749 5.2): rendered as problem+json that also carries the RFC's
    `error` and `error_description` members."""

    status = 400
    code = "invalid_request"
    title = "The token request is malformed"


class TokenInvalidClient(TokenError):
    status = 401
    code = "invalid_client"
    title = "Client authentication failed"

    def __init__(self, detail: str | None = None, **extra: Any) -> None:
        super().__init__(detail, **extra)
        self.headers = {"WWW-Authenticate": 'Basic realm="pb"'}


class TokenInvalidGrant(TokenError):
    code = "invalid_grant"
    title = "The authorization code or refresh token is invalid, expired, revoked or was issued to another client"


class TokenUnsupportedGrantType(TokenError):
    code = "unsupported_grant_type"
    title = "Use grant_type authorization_code, refresh_token or client_credentials"


class TokenInvalidScope(TokenError):
    code = "invalid_scope"
    title = "The requested scope exceeds what was granted"


class TokenUnauthorizedClient(TokenError):
    code = "unauthorized_client"
    title = "The client is not allowed to use this grant"


class TotpRequired(Unauthorized):
    code = "totp_required"
    title = "This account needs the code from its authenticator app (`totp_code`)"


class AdminNotFound(NotFound):
    code = "admin_not_found"
    title = "No such administrator"


class AdminSessionNotFound(NotFound):
    code = "admin_session_not_found"
    title = "No such session of this administrator"


class AdminAlreadyInState(Conflict):
    code = "admin_already_in_state"
    title = "The administrator is already in that state"


class AdminSelfChange(Conflict):
    code = "admin_self_change"
    title = "Administrators cannot disable themselves or change their own role"


class LastSuperAdmin(Conflict):
    code = "last_super_admin"
    title = "The last active super administrator cannot be disabled or demoted"


class TotpAlreadyEnrolled(Conflict):
    code = "totp_already_enrolled"
    title = "A second factor is already enrolled; an administrator can reset it"


class TotpNotPending(Conflict):
    code = "totp_not_pending"
    title = "Start the enrolment first (POST /v1/admin/me/totp)"


class TotpCodeInvalid(BusinessError):
    status = 400
    code = "totp_code_invalid"
    title = "The code does not match; check the authenticator app's clock"
