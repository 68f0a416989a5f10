"""Outbound HTTP from nodes: refuse private, loopback and link-local targets.

The check is on the addresses the host name resolves to, so a public name pointing at
127.0.0.1 is refused too. Redirects are not followed (a redirect could lead inside).
"""

from __future__ import annotations

import ipaddress
import socket
from urllib.parse import urlsplit


class PrivateAddress(ValueError):
    pass


def is_public(address: str) -> bool:
    ip = ipaddress.ip_address(address.split("%", 1)[0])
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped
    return ip.is_global and not ip.is_multicast


def check_public(url: str) -> None:
    public_address(url)


def public_address(url: str, *, allow_private: bool = False) -> str:
    """The first address ``url``'s host resolves to; raise PrivateAddress unless every one
    is public (or ``allow_private``). Connect to that address, not the name again."""
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ValueError(f"{url!r} is not an http(s) URL")
    port = parts.port or (443 if parts.scheme == "https" else 80)
    try:
        infos = socket.getaddrinfo(parts.hostname, port, type=socket.SOCK_STREAM)
    except socket.gaierror as exc:
        raise ValueError(f"can't resolve {parts.hostname!r}: {exc.strerror}") from None
    for info in infos:
        address = str(info[4][0])
        if not allow_private and not is_public(address):
            raise PrivateAddress(
                f"{parts.hostname} resolves to {address}, a private, loopback or link-local "
                "address; set POCKETRUN_HTTP_ALLOW_PRIVATE=true to allow it"
            )
    return str(infos[0][4][0])
