"""The `Idempotency-Key` header every money-moving or audited request carries: one dependency, so the
rule (required, 1 to N characters, surrounding spaces ignored) and its error are the same everywhere.

    async def top_up(..., key: IdempotencyKey) -> ...            # up to 200 characters
    async def adjust(..., key: Annotated[str, Depends(idempotency_key(150))]) -> ...
"""

from collections.abc import Callable
from typing import Annotated

from fastapi import Depends, Header

from kit.errors import BusinessError

DEFAULT_MAX_LENGTH = 200


class IdempotencyKeyRequired(BusinessError):
    status = 400
    code = "idempotency_key_required"
    title = "Send an Idempotency-Key header"


def idempotency_key(max_length: int = DEFAULT_MAX_LENGTH) -> Callable[[str | None], str]:
    """A dependency returning the request's key; 400 `idempotency_key_required` when it is missing,
    blank or longer than `max_length` (a missing header is a business error, not a 422)."""

    def dependency(value: Annotated[str | None, Header(alias="Idempotency-Key")] = None) -> str:
        key = (value or "").strip()
        if not key or len(key) > max_length:
            raise IdempotencyKeyRequired(f"Send an Idempotency-Key header of 1 to {max_length} characters")
        return key

    return dependency


IdempotencyKey = Annotated[str, Depends(idempotency_key())]
