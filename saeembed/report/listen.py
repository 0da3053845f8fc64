"""Where the feature browser may listen, and which Host headers it answers.

Loopback only unless the caller explicitly allows remote clients. Either way the Host header is
checked (DNS rebinding: a page on evil.example that re-points its name at this machine sends
`Host: evil.example`), so only names of this server are answered.
"""

from __future__ import annotations

import ipaddress
import socket
from dataclasses import dataclass

from saeembed.errors import InputError

LOOPBACK_NAMES = ("127.0.0.1", "localhost", "[::1]")


@dataclass(frozen=True)
class Listen:
    """A resolved --host: the socket family and address literal to bind, and whether it is loopback."""

    host: str          # as given (brackets stripped)
    family: int        # socket.AF_INET or socket.AF_INET6
    address: str       # the IP literal that is bound
    loopback: bool
    wildcard: bool     # 0.0.0.0 / :: (every interface)


def resolve(host: str) -> Listen:
    """Resolve --host once; the bind uses the resolved literal, so the loopback check is what gets bound."""
    h = (host or "").strip()
    if h.startswith("[") and h.endswith("]"):
        h = h[1:-1]
    if not h:  # Python binds "" to every interface
        h = "0.0.0.0"
    try:
        ip = ipaddress.ip_address(h)
    except ValueError:
        try:
            infos = socket.getaddrinfo(h, None, type=socket.SOCK_STREAM)
        except (socket.gaierror, UnicodeError, OSError):
            raise InputError(f"cannot resolve --host {host!r}; use an address such as 127.0.0.1 or ::1") from None
        infos.sort(key=lambda i: i[0] != socket.AF_INET)  # prefer IPv4 for names, as before
        ip = ipaddress.ip_address(infos[0][4][0].split("%")[0])
    family = socket.AF_INET6 if ip.version == 6 else socket.AF_INET
    return Listen(h, family, str(ip), ip.is_loopback, ip.is_unspecified)


def _bracket(name: str) -> str:
    return f"[{name}]" if ":" in name and not name.startswith("[") else name


def allowed_hosts(listen: Listen, port: int) -> frozenset[str]:
    """Host header values this server answers: loopback names, and the bound name/address (for a wildcard
    bind with remote clients allowed: this machine's name and addresses too); each with or without :port."""
    names = set(LOOPBACK_NAMES) | {_bracket(listen.host.lower()), _bracket(listen.address.lower())}
    if listen.wildcard and not listen.loopback:
        try:
            local = {socket.gethostname(), socket.getfqdn()}
            for name in list(local):
                local |= {i[4][0].split("%")[0] for i in socket.getaddrinfo(name, None, type=socket.SOCK_STREAM)}
        except (socket.gaierror, UnicodeError, OSError):
            pass
        names |= {_bracket(n.lower()) for n in local if n}
    names -= {"0.0.0.0", "[::]"}  # a client never sends these as Host
    return frozenset(names | {f"{n}:{port}" for n in names})


def host_ok(header: str | None, allowed: frozenset[str]) -> bool:
    return (header or "").strip().lower() in allowed


def check_remote(listen: Listen, allow_remote: bool) -> None:
    """Refuse a non-loopback bind unless remote clients are explicitly allowed."""
    if not listen.loopback and not allow_remote:
        where = "every interface" if listen.wildcard else listen.address
        raise InputError(f"refusing to listen on {listen.host} ({where}): the browser serves every document in the "
                         "store without authentication, so it listens on loopback only; pass --allow-remote to "
                         "expose it anyway")
