"""Which addresses a webhook may reach (OWASP API7:2023, SSRF).

Refused unless allow-listed: loopback, private, link-local (169.254.0.0/16, so cloud metadata),
CGNAT (100.64.0.0/10), unspecified, multicast, reserved, anything not globally routable, and
IPv6 forms that embed an IPv4 address (IPv4-mapped always; NAT64, 6to4 and Teredo when the
embedded address is refused). The allow-list holds host names (matched on the URL's host)
and IP addresses or CIDRs (matched on every resolved address).

Hosts written as integers or with octal/hex parts (`2130706433`, `0x7f.1`, `0177.0.0.1`) are
read the way `inet_aton` reads them, so they are checked as the address they really are.
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass

from relance_feedback.errors import InvalidAllowlist

IpAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
IpNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network

_CGNAT = ipaddress.IPv4Network("100.64.0.0/10")
_NAT64 = ipaddress.IPv6Network("64:ff9b::/96")


def _inet_aton_part(part: str) -> int | None:
    if not part:
        return None
    try:
        if part[:2].lower() == "0x":
            return int(part[2:], 16) if part[2:] else 0
        if len(part) > 1 and part.startswith("0"):
            return int(part[1:], 8)
        return int(part, 10) if part.isdigit() else None
    except ValueError:
        return None


def parse_ipv4_loose(host: str) -> ipaddress.IPv4Address | None:
    """An IPv4 address in any `inet_aton` form (1 to 4 parts, decimal/octal/hex), or None."""
    parts = host.rstrip(".").split(".")
    if not 1 <= len(parts) <= 4:
        return None
    numbers = [_inet_aton_part(p) for p in parts]
    if any(n is None for n in numbers):
        return None
    values = [n for n in numbers if n is not None]
    *head, last = values
    if any(n > 255 for n in head) or last >= 256 ** (4 - len(head)):
        return None
    value = 0
    for n in head:
        value = value * 256 + n
    value = value * 256 ** (4 - len(head)) + last
    return ipaddress.IPv4Address(value)


def parse_ip(host: str) -> IpAddress | None:
    """The address a URL host denotes when it is an IP literal (any form), else None."""
    text = host.strip("[]")
    try:
        return ipaddress.ip_address(text.split("%", 1)[0])
    except ValueError:
        return parse_ipv4_loose(text)


def refusal_reason(address: IpAddress) -> str | None:
    """Why `address` may not be reached, or None when it is a public address."""
    if isinstance(address, ipaddress.IPv6Address):
        if address.ipv4_mapped is not None:
            return "ipv4-mapped ipv6"
        embedded: ipaddress.IPv4Address | None = None
        if address in _NAT64:
            embedded = ipaddress.IPv4Address(int(address) & 0xFFFFFFFF)
        elif address.sixtofour is not None:
            embedded = address.sixtofour
        elif address.teredo is not None:
            embedded = address.teredo[1]
        if embedded is not None:
            inner = refusal_reason(embedded)
            if inner is not None:
                return f"ipv6 embedding a refused ipv4 ({inner})"
        if address.is_site_local:
            return "site-local"
    checks: tuple[tuple[bool, str], ...] = (
        (address.is_unspecified, "unspecified"),
        (address.is_loopback, "loopback"),
        (address.is_link_local, "link-local"),
        (isinstance(address, ipaddress.IPv4Address) and address in _CGNAT, "cgnat"),
        (address.is_multicast, "multicast"),
        (address.is_reserved, "reserved"),
        (address.is_private, "private"),
        (not address.is_global, "not globally routable"),
    )
    for refused, reason in checks:
        if refused:
            return reason
    return None


def _normalise_host(host: str) -> str:
    return host.strip("[]").rstrip(".").lower()


@dataclass(frozen=True, slots=True)
class Allowlist:
    """Hosts and networks exempt from the SSRF guard (`RELANCE_WEBHOOK_ALLOWLIST`)."""

    hosts: frozenset[str] = frozenset()
    networks: tuple[IpNetwork, ...] = ()

    @classmethod
    def parse(cls, text: str | None) -> Allowlist:
        """Comma- or space-separated entries: `support.internal, 10.0.0.0/8, 127.0.0.1`."""
        hosts: set[str] = set()
        networks: list[IpNetwork] = []
        for raw in (text or "").replace(",", " ").split():
            entry = raw.strip()
            try:
                networks.append(ipaddress.ip_network(entry.strip("[]"), strict=False))
                continue
            except ValueError:
                pass
            loose = parse_ipv4_loose(entry)
            if loose is not None:
                networks.append(ipaddress.IPv4Network(loose))
                continue
            name = _normalise_host(entry)
            if not name or "/" in name or any(c in name for c in ":@?#"):
                raise InvalidAllowlist(f"{raw!r} is not a host name, IP address or CIDR")
            hosts.add(name)
        return cls(frozenset(hosts), tuple(networks))

    def allows_host(self, host: str) -> bool:
        return _normalise_host(host) in self.hosts

    def allows_address(self, address: IpAddress) -> bool:
        return any(address.version == n.version and address in n for n in self.networks)


def check_addresses(
    host: str, addresses: list[IpAddress], allowlist: Allowlist
) -> tuple[IpAddress, str] | None:
    """The first refused address among everything `host` resolved to, with the reason.

    None means every address may be reached. An allow-listed host name exempts all of its
    addresses; otherwise each address must be public or inside an allow-listed network.
    """
    if allowlist.allows_host(host):
        return None
    for address in addresses:
        if allowlist.allows_address(address):
            continue
        reason = refusal_reason(address)
        if reason is not None:
            return address, reason
    return None
