"""Who sent a request: the one rule every use of a client address follows (rate limits, the audit trail's
"from where"). The peer's address, unless the peer is a configured trusted proxy
(`RATE_LIMIT_TRUSTED_PROXIES`); then `X-Forwarded-For` read from the right, skipping the proxies
themselves, so what a client writes into the header itself is never believed (issue 15)."""

import ipaddress
from collections.abc import Iterable

Network = ipaddress.IPv4Network | ipaddress.IPv6Network


def parse_networks(specs: Iterable[str]) -> tuple[Network, ...]:
    return tuple(ipaddress.ip_network(spec.strip(), strict=False) for spec in specs if spec.strip())


def _ip(value: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address | None:
    try:
        return ipaddress.ip_address(value.strip())
    except ValueError:
        return None


def client_address(peer: str | None, forwarded_for: str | None, trusted: tuple[Network, ...]) -> str:
    """The client's address: the peer's, unless the peer is a trusted proxy; then the rightmost address of
    `X-Forwarded-For` that is not a trusted proxy itself (entries to its left are the client's own words)."""
    address = peer or "unknown"
    if not trusted or not forwarded_for or not _trusted(address, trusted):
        return address
    for hop in reversed(forwarded_for.split(",")):
        ip = _ip(hop)
        if ip is None:
            return address  # a malformed hop: the last trusted one is all we know
        address = str(ip)
        if not any(ip in network for network in trusted):
            return address
    return address


def _trusted(address: str, trusted: tuple[Network, ...]) -> bool:
    ip = _ip(address)
    return ip is not None and any(ip in network for network in trusted)


def app_trusted_proxies(app: object) -> tuple[Network, ...]:
    """The trusted proxies of a kit service's app (its runtime's settings); none before the lifespan."""
    runtime = getattr(getattr(app, "state", None), "runtime", None)
    return tuple(getattr(runtime, "trusted_proxies", ()) or ())
