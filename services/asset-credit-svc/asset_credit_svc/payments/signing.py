"""HMAC-SHA256 signatures over a canonical JSON body, bound to the payment channel.

The canonical form is the JSON object with sorted keys, no whitespace, UTF-8. The signed message is
`<channel>\n<canonical body>`, so a notification for one channel is not accepted on another.
"""

import hashlib
import hmac
import json
from collections.abc import Mapping
from typing import Any

SIGNATURE_HEADER = "X-Sandbox-Signature"


def canonical_json(payload: Mapping[str, Any]) -> bytes:
    return json.dumps(payload, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode()


def sign(secret: bytes, channel: str, payload: Mapping[str, Any]) -> str:
    message = channel.encode() + b"\n" + canonical_json(payload)
    return hmac.new(secret, message, hashlib.sha256).hexdigest()


def verify(secret: bytes, channel: str, payload: Mapping[str, Any], signature: str | None) -> bool:
    if not signature:
        return False
    return hmac.compare_digest(sign(secret, channel, payload), signature.strip().lower())
