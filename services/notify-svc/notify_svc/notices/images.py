"""What an uploaded image is, judged by its bytes (magic numbers), never by its name or declared type."""

import filetype

ALLOWED_TYPES = frozenset({"image/png", "image/jpeg", "image/gif", "image/webp"})


def sniff(data: bytes) -> str | None:
    """The image's MIME type when the bytes are one of the allowed formats, else None."""
    kind = filetype.guess(data)
    if kind is None or kind.mime not in ALLOWED_TYPES:
        return None
    return str(kind.mime)
