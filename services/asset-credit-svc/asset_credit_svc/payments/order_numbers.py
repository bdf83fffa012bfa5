"""Our order and refund numbers carry a UUID (a top-up's `<uuid>`, `chg_<uuid>`, `wd_<uuid>`, ...), 36
characters with dashes. The channels allow less: WeChat Pay's `out_trade_no` is 6 to 32 of letters,
digits, `_`, `-`, `*`; Alipay's at most 64 of letters, digits and `_`. On the wire the UUID is written in
base32 (26 capitals and digits), so `chg_<uuid>` travels as `chg_` + 26 characters; what comes back is
read the other way. A number without a UUID travels as it is."""

import base64
import re
import uuid

_OURS = re.compile(r"^(?P<prefix>[a-z]+_)?(?P<uuid>[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12})$")
_WIRE = re.compile(r"^(?P<prefix>[a-z]+_)?(?P<b32>[A-Z2-7]{26})$")


def to_wire(number: str) -> str:
    ours = _OURS.match(number)
    if ours is None:
        return number
    encoded = base64.b32encode(uuid.UUID(ours["uuid"]).bytes).decode().rstrip("=")
    return (ours["prefix"] or "") + encoded


def from_wire(number: str) -> str:
    wire = _WIRE.match(number)
    if wire is None:
        return number
    try:
        value = uuid.UUID(bytes=base64.b32decode(wire["b32"] + "======"))
    except ValueError:
        return number
    return (wire["prefix"] or "") + str(value)
