"""A service's refusal shown where the staff member made the request: a form's 400/404/409/413/415/422
answer (or the console's own reading of a field) is kept in the session and shown on the form's page
after the redirect (post/redirect/get), with the service's code and message, in the staff member's
language where the catalogue knows the code. A service that fails (5xx, unreachable) is a 502 page."""

from dataclasses import asdict, dataclass
from typing import Any

from console.i18n import CATALOGUE, translate

# What a form can be refused for: the staff member can fix the input or see why the action cannot be done.
FORM_STATUSES = frozenset({400, 404, 409, 413, 415, 422})


@dataclass(frozen=True)
class Problem:
    status: int
    code: str
    detail: str

    def message(self, lang: str) -> str:
        """The catalogue's text for this code, or the service's own words."""
        key = f"problem.{self.code}"
        return translate(key, lang) if key in CATALOGUE else self.detail

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def of(cls, data: dict[str, Any]) -> "Problem":
        return cls(int(data["status"]), str(data["code"])[:64], str(data["detail"])[:500])


def status_for(status: int) -> int:
    """The console's answer for a service's: its refusals as they are, its failures as 502."""
    if status in FORM_STATUSES or status in (403, 429):
        return status
    return 502
