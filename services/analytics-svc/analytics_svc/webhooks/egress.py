"""Where a partner webhook may be sent (SSRF). A partner URL must resolve to public addresses only: a
host that resolves to a private (10/8, 172.16/12, 192.168/16, fc00::/7), loopback, link-local (169.254/16,
fe80::/10: the cloud metadata endpoints 169.254.169.254 and Tencent's 169.254.0.23), shared (100.64/10:
Alibaba Cloud's metadata 100.100.100.200), multicast, reserved or unspecified address is refused. It is
checked at registration and again at every delivery (the name may resolve elsewhere by then: DNS
rebinding), and the delivery connects to the address it checked (`Target`: the URL with the address, the
name in `Host` and in TLS's SNI and certificate check), so no second lookup can slip in between. Loopback
may be allowed for local and test stacks only (`WEBHOOK_ALLOW_LOOPBACK`, refused in production)."""

import asyncio
import ipaddress
import socket
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from urllib.parse import urlsplit, urlunsplit

from kit.errors import BusinessError

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
# host, port -> every address the name resolves to (a collaborator, so a test can give its own DNS).
Resolver = Callable[[str, int], Awaitable[list[IPAddress]]]


class WebhookUrlRefused(BusinessError):
    status = 422
    code = "webhook_url_refused"
    title = "A partner webhook must be sent to a public address"


async def resolve(host: str, port: int) -> list[IPAddress]:
    infos = await asyncio.get_running_loop().getaddrinfo(host, port, type=socket.SOCK_STREAM)
    return [ipaddress.ip_address(str(info[4][0]).split("%", 1)[0]) for info in infos]


def refusal(address: IPAddress, *, allow_loopback: bool) -> str | None:
    """Why this address may not receive a webhook, or None."""
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        address = address.ipv4_mapped
    if address.is_loopback:
        return None if allow_loopback else "loopback"
    if address.is_link_local:
        return "link-local (cloud metadata)"
    if address.is_unspecified or address.is_multicast or address.is_reserved:
        return "reserved"
    if address.is_private or not address.is_global:
        return "private"
    return None


@dataclass(frozen=True)
class Target:
    """A checked destination: POST to `url` (the address), naming `host` in Host and SNI."""

    url: str
    host: str  # the Host header: the name (and port) as the partner gave it
    sni: str
    address: IPAddress


async def check(url: str, *, allow_loopback: bool, resolver: Resolver = resolve) -> Target:
    """Resolve the URL's host and refuse it unless every address is allowed (a name with one public and
    one private address is refused: the client could pick either)."""
    parts = urlsplit(url)
    host = parts.hostname
    if parts.scheme not in ("http", "https") or not host:
        raise WebhookUrlRefused(f"{url} is not an http(s) URL", reason="scheme")
    port = parts.port or (443 if parts.scheme == "https" else 80)
    try:
        addresses = await resolver(host, port)
    except (OSError, UnicodeError) as exc:
        raise WebhookUrlRefused(f"{host} does not resolve: {exc}", reason="unresolvable") from None
    if not addresses:
        raise WebhookUrlRefused(f"{host} does not resolve", reason="unresolvable")
    for address in addresses:
        why = refusal(address, allow_loopback=allow_loopback)
        if why is not None:
            raise WebhookUrlRefused(f"{host} resolves to a {why} address ({address})", reason=why)
    chosen = addresses[0]
    port_suffix = f":{parts.port}" if parts.port else ""
    named = f"[{host}]" if ":" in host else host
    userinfo = parts.netloc.rpartition("@")[0]
    literal = f"[{chosen}]" if chosen.version == 6 else str(chosen)
    netloc = f"{userinfo}@{literal}{port_suffix}" if userinfo else f"{literal}{port_suffix}"
    return Target(url=urlunsplit(parts._replace(netloc=netloc)), host=named + port_suffix, sni=host, address=chosen)
