"""A service's refusal shown where the staff member made the request: a form's 400/404/409/413/415/422
answer (or the console's own reading of a field) is kept in the session and shown on the form's page
after the redirect (post/redirect/get), with the service's code and message, in the staff member's
language where the catalogue knows the code. A service that fails (5xx, unreachable) is a 502 page."""

import json
from dataclasses import asdict, dataclass, field
from typing import Any

from console.i18n import CATALOGUE, translate

# What a form can be refused for: the staff member can fix the input or see why the action cannot be done.
FORM_STATUSES = frozenset({400, 404, 409, 413, 415, 422})


# What is never given back to a page: secrets typed into the form.
NOT_REFILLED = ("password", "csrf", "totp")
MAX_REFILL_CHARS = 16_000


@dataclass(frozen=True)
class Problem:
    status: int
    code: str
    detail: str
    # The refused form (its action and what was typed), so the page can put the values back in it.
    action: str = ""
    form: dict[str, str] = field(default_factory=dict)

    def message(self, lang: str) -> str:
        """The catalogue's text for this code, or the service's own words."""
        key = f"problem.{self.code}"
        return translate(key, lang) if key in CATALOGUE else self.detail

    def with_form(self, action: str, form: dict[str, str]) -> "Problem":
        kept = {k: v for k, v in form.items() if not any(word in k.lower() for word in NOT_REFILLED)}
        if sum(len(k) + len(v) for k, v in kept.items()) > MAX_REFILL_CHARS:
            kept = {}
        return Problem(self.status, self.code, self.detail, action, kept)

    def refill(self) -> str:
        """JSON for the page's script: which form to fill again, with what (empty: nothing to refill)."""
        return json.dumps({"action": self.action, "fields": self.form}) if self.action and self.form else ""

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def of(cls, data: dict[str, Any]) -> "Problem":
        form = data.get("form") or {}
        return cls(
            int(data["status"]),
            str(data["code"])[:64],
            str(data["detail"])[:500],
            str(data.get("action") or ""),
            {str(k): str(v) for k, v in form.items()} if isinstance(form, dict) else {},
        )


def status_for(status: int) -> int:
    """The console's answer for a service's: its refusals as they are, its failures as 502."""
    if status in FORM_STATUSES or status in (403, 429):
        return status
    return 502
