"""Expiring signed URLs for notice images: `/v1/media/{id}?exp=<unix s>&sig=<hex HMAC-SHA256>` (kit.signed_urls).
Anyone holding the URL may fetch the image until `exp`; nobody can make one without the key."""

from kit.signed_urls import UrlSigner as _UrlSigner

MEDIA_PATH = "/v1/media"


class UrlSigner(_UrlSigner):
    def __init__(self, key: bytes, ttl_s: int) -> None:
        super().__init__(key, ttl_s, MEDIA_PATH)
