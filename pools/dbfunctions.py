"""SQL helpers that must behave the same on PostgreSQL and SQLite.

IPv4 order: PostgreSQL stores GenericIPAddressField as `inet`, which sorts numerically; SQLite stores text,
where "10.0.0.10" sorts before "10.0.0.9". On SQLite every new connection gets a small deterministic
function, `eipdash_ip_key`, that turns an address into a fixed-width, zero-padded key which sorts the same
way as the numbers.
"""

from __future__ import annotations

import functools
import ipaddress
import re
from typing import Any

from django.db.backends.signals import connection_created
from django.db.models import F, Func, TextField

SQLITE_IP_KEY = "eipdash_ip_key"

_OCTET = r"(?:25[0-5]|2[0-4][0-9]|1[0-9][0-9]|[1-9]?[0-9])"
# An IPv4 address as ipaddress writes it (four decimal octets, no leading zero): its key without parsing it.
_IPV4 = re.compile(rf"{_OCTET}\.{_OCTET}\.{_OCTET}\.{_OCTET}")


def ip_sort_key(value: str | None) -> str:
    """'9.8.7.6' → '4:009.008.007.006'; IPv6 after IPv4; text that is no address last, as it is."""
    if value is None:
        return "9:"
    if _IPV4.fullmatch(value):
        return _ipv4_key(value)
    return parsed_ip_sort_key(value)


def parsed_ip_sort_key(value: str) -> str:
    """ip_sort_key by ipaddress's reading of the text: what the fast path for plain IPv4 text must agree with."""
    try:
        address = ipaddress.ip_address(value)
    except ValueError:
        return "9:" + value
    if address.version == 4:
        return _ipv4_key(str(address))
    return "6:" + address.exploded


def _ipv4_key(text: str) -> str:
    return "4:" + ".".join(f"{int(part):03d}" for part in text.split("."))


# What SQLite calls, once per row it sorts: the EIPs page sorted 10,000 addresses on every request, and parsing
# each one took 48 ms of it. The key of an address never changes, so each process keeps the keys it computed.
_cached_ip_sort_key = functools.lru_cache(maxsize=1 << 16)(ip_sort_key)


def _register(sender: Any, connection: Any, **kwargs: Any) -> None:
    if connection.vendor == "sqlite":
        connection.connection.create_function(SQLITE_IP_KEY, 1, _cached_ip_sort_key, deterministic=True)


def install() -> None:
    """Called from the app's ready(): before any connection of the process is opened."""
    connection_created.connect(_register, dispatch_uid="eipdash-sqlite-ip-key")


def ip_order(field: str, *, vendor: str) -> Func | F:
    """An expression that orders `field` (an IP address column) numerically on this database."""
    if vendor == "sqlite":
        return Func(F(field), function=SQLITE_IP_KEY, output_field=TextField())
    return F(field)
