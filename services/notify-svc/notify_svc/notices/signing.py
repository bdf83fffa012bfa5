"""Expiring signed URLs for notice images: `/v1/media/{id}?exp=<unix s>&sig=<hex HMAC-SHA256>`. Anyone
holding the URL may fetch the image until `exp`; nobody can make one without the key."""

import hashlib
import hmac
import time
import uuid

MEDIA_PATH = "/v1/media"


class UrlSigner:
    def __init__(self, key: bytes, ttl_s: int) -> None:
        self._key = key
        self.ttl_s = ttl_s

    def _mac(self, image_id: uuid.UUID, expires: int) -> str:
        return hmac.new(self._key, f"{image_id}.{expires}".encode(), hashlib.sha256).hexdigest()

    def url(self, image_id: uuid.UUID, now: float | None = None) -> str:
        expires = int((now if now is not None else time.time()) + self.ttl_s)
        return f"{MEDIA_PATH}/{image_id}?exp={expires}&sig={self._mac(image_id, expires)}"

    def valid(self, image_id: uuid.UUID, expires: int, signature: str) -> bool:
        return hmac.compare_digest(self._mac(image_id, expires), signature)
