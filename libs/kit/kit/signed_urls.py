"""Expiring signed URLs: `<path>/<id>?exp=<unix s>&sig=<hex HMAC-SHA256 of "<id>.<exp>">`. Anyone holding the
URL may fetch the thing until `exp`; nobody can make one without the key (notify-svc's notice images,
device-svc's firmware images)."""

import hashlib
import hmac
import time


class UrlSigner:
    def __init__(self, key: bytes, ttl_s: int, path: str) -> None:
        self._key = key
        self.ttl_s = ttl_s
        self.path = path.rstrip("/")

    def _mac(self, item_id: object, expires: int) -> str:
        return hmac.new(self._key, f"{item_id}.{expires}".encode(), hashlib.sha256).hexdigest()

    def url(self, item_id: object, now: float | None = None) -> str:
        expires = int((now if now is not None else time.time()) + self.ttl_s)
        return f"{self.path}/{item_id}?exp={expires}&sig={self._mac(item_id, expires)}"

    def valid(self, item_id: object, expires: int, signature: str) -> bool:
        """Whether the signature is the key's for this id and expiry (the expiry itself is the caller's check)."""
        return hmac.compare_digest(self._mac(item_id, expires), signature)
