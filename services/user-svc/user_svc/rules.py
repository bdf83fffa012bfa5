"""Input rules shared by registration, login and settings: pure functions, no I/O."""

import re
import unicodedata

PASSWORD_MIN_CHARS = 8
PASSWORD_MAX_CHARS = 128
DISPLAY_NAME_MAX_CHARS = 64

_E164 = re.compile(r"\+[1-9][0-9]{6,14}", re.ASCII)
_CN_MOBILE = re.compile(r"\+861[3-9][0-9]{9}", re.ASCII)
_VISUAL_SEPARATORS = re.compile(r"[ \-]")
_ADMIN_LOGIN = re.compile(r"[a-z0-9][a-z0-9._@-]{2,63}", re.ASCII)
_USERNAME = re.compile(r"[a-z][a-z0-9_.]{2,31}", re.ASCII)
_EMAIL = re.compile(
    r"[^@\s]{1,64}@[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?(?:\.[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?)+"
)
_CODE = re.compile(r"[0-9]{6}", re.ASCII)


class RuleViolation(ValueError):
    """A rule an input broke; `code` is stable and machine-readable."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


def normalise_phone(raw: str) -> str:
    """An E.164 number (`+8613800138000`); spaces and hyphens are accepted as visual separators."""
    candidate = _VISUAL_SEPARATORS.sub("", raw.strip())
    if not _E164.fullmatch(candidate):
        raise RuleViolation("invalid_phone", "Give the phone number in E.164 form, e.g. +8613800138000")
    if candidate.startswith("+86") and not _CN_MOBILE.fullmatch(candidate):
        raise RuleViolation("invalid_phone", "A +86 number must be an 11-digit mobile number starting with 1")
    return candidate


def check_password(password: str) -> str:
    if len(password) < PASSWORD_MIN_CHARS:
        raise RuleViolation("password_too_short", f"The password needs at least {PASSWORD_MIN_CHARS} characters")
    if len(password) > PASSWORD_MAX_CHARS:
        raise RuleViolation("password_too_long", f"The password may have at most {PASSWORD_MAX_CHARS} characters")
    if not password.strip():
        raise RuleViolation("password_blank", "The password may not be only whitespace")
    if any(unicodedata.category(ch) == "Cc" for ch in password):
        raise RuleViolation("password_invalid_characters", "The password may not contain control characters")
    return password


def normalise_display_name(raw: str | None) -> str | None:
    """Trimmed, NFC-normalised; blank means none."""
    if raw is None:
        return None
    name = unicodedata.normalize("NFC", raw.strip())
    if not name:
        return None
    if len(name) > DISPLAY_NAME_MAX_CHARS:
        raise RuleViolation(
            "display_name_too_long", f"The display name may have at most {DISPLAY_NAME_MAX_CHARS} characters"
        )
    if any(unicodedata.category(ch).startswith("C") for ch in name):
        raise RuleViolation("display_name_invalid_characters", "The display name may not contain control characters")
    return name


def normalise_admin_login(raw: str) -> str:
    login = raw.strip().lower()
    if not _ADMIN_LOGIN.fullmatch(login):
        raise RuleViolation(
            "invalid_admin_login", "An admin login has 3-64 characters: letters, digits and . _ @ -, starting alnum"
        )
    return login


def normalise_email(raw: str) -> str:
    """Trimmed, lower-cased; a plain `local@domain.tld` address of at most 254 characters."""
    email = raw.strip().lower()
    if len(email) > 254 or not _EMAIL.fullmatch(email) or any(unicodedata.category(ch).startswith("C") for ch in email):
        raise RuleViolation("invalid_email", "Give an e-mail address like name@example.com")
    return email


def normalise_username(raw: str) -> str:
    """3-32 characters: lower-case letters, digits, `_` and `.`, starting with a letter."""
    name = raw.strip().lower()
    if not _USERNAME.fullmatch(name):
        raise RuleViolation(
            "invalid_username", "A user name has 3-32 characters: letters, digits, _ and ., starting with a letter"
        )
    return name


def check_code(raw: str) -> str:
    if not _CODE.fullmatch(raw):
        raise RuleViolation("invalid_code", "A verification code is 6 digits")
    return raw


def classify_login(raw: str) -> tuple[str, str] | None:
    """What a login names: ("phone" | "email" | "username", canonical value), or None for nothing valid."""
    try:
        if "@" in raw:
            return "email", normalise_email(raw)
        if raw.strip().startswith("+") or raw.strip()[:1].isdigit():
            return "phone", normalise_phone(raw)
        return "username", normalise_username(raw)
    except RuleViolation:
        return None
