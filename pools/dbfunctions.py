"""SQL helpers that must behave the same on PostgreSQL and SQLite.

IPv4 order: PostgreSQL stores GenericIPAddressField as `inet`, which sorts numerically; SQLite stores text,
where "10.0.0.10" sorts before "10.0.0.9". On SQLite every new connection gets a small deterministic
function, `eipdash_ip_key`, that turns an address into a fixed-width, zero-padded key which sorts the same
way as the numbers.
"""

from __future__ import annotations

import ipaddress
from typing import Any

from django.db.backends.signals import connection_created
from django.db.models import F, Func, TextField

SQLITE_IP_KEY = "eipdash_ip_key"


def ip_sort_key(value: str | None) -> str:
    """'9.8.7.6' → '4:009.008.007.006'; IPv6 after IPv4; text that is no address last, as it is."""
    if value is None:
        return "9:"
    try:
        address = ipaddress.ip_address(value)
    except ValueError:
        return "9:" + value
    if address.version == 4:
        return "4:" + ".".join(f"{int(part):03d}" for part in str(address).split("."))
    return "6:" + address.exploded


def _register(sender: Any, connection: Any, **kwargs: Any) -> None:
    if connection.vendor == "sqlite":
        connection.connection.create_function(SQLITE_IP_KEY, 1, ip_sort_key, deterministic=True)


def install() -> None:
    """Called from the app's ready(): before any connection of the process is opened."""
    connection_created.connect(_register, dispatch_uid="eipdash-sqlite-ip-key")


def ip_order(field: str, *, vendor: str) -> Func | F:
    """An expression that orders `field` (an IP address column) numerically on this database."""
    if vendor == "sqlite":
        return Func(F(field), function=SQLITE_IP_KEY, output_field=TextField())
    return F(field)
