"""A launch spec's allowlist: the public IPs of its pool, as a partner puts them in a firewall. One shape for the
API (JSON and text), the spec page's Copy button and its download, so that the three never differ.

Pure: the rows come from pools/selectors_egress.py.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import ipaddress
import json
import re
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

IN_USE = "in-use"
FREE = "free"
FORMATS = ("json", "txt")

# One entity tag of an If-None-Match list: an opaque quoted string, weak or not (RFC 9110 8.8.3); a comma
# may sit inside the quotes, so the list is read tag by tag, never split on commas.
_ENTITY_TAG = re.compile(r'(?:W/)?"[^"]*"')


def address_state(*, associated: bool, claimed: bool) -> str:
    """in-use: on a node of ours (an open claim) or associated in AWS with anything; free: what the pool could
    hand out now (eip_state's "free"). A conflict is in use: the address sends someone's traffic."""
    return IN_USE if associated or claimed else FREE


@dataclass(frozen=True)
class AllowlistEntry:
    public_ip: str
    allocation_id: str
    state: str


@dataclass(frozen=True)
class Allowlist:
    spec_name: str
    entries: tuple[AllowlistEntry, ...]
    # The newest reading of these rows (their max last_seen_at); None for an empty pool.
    updated_at: dt.datetime | None

    @property
    def ips(self) -> list[str]:
        return [entry.public_ip for entry in self.entries]

    def text(self) -> str:
        """One IP a line, each line ended: what `?format=txt`, the download and the Copy button give."""
        return "".join(f"{ip}\n" for ip in self.ips)

    def _body(self) -> dict[str, Any]:
        return {"launchSpec": self.spec_name,
                "addresses": [{"publicIp": e.public_ip, "allocationId": e.allocation_id, "state": e.state}
                              for e in self.entries]}

    def as_api(self) -> dict[str, Any]:
        return {**self._body(), "updatedAt": self.updated_at}

    def etag(self, fmt: str) -> str:
        """A weak validator over what a partner acts on. updatedAt is left out: every pass moves it, so an ETag
        over it would change every few seconds and a sync job polling with If-None-Match would download (and
        re-apply) an unchanged list each time. Weak (W/), because the bodies it stands for still differ in
        updatedAt: equal in meaning, not byte for byte. The text's covers only the IPs (its only content);
        the JSON's the addresses' allocation ids and states too. The format is hashed in: the two are different
        representations of one URL and never validate each other."""
        if fmt == "txt":
            payload = self.text()
        else:
            payload = json.dumps(self._body(), sort_keys=True, separators=(",", ":"))
        digest = hashlib.sha256(f"{fmt}\n{payload}".encode()).hexdigest()[:32]
        return f'W/"{digest}"'


def build(spec_name: str, rows: Iterable[tuple[str, str, str, bool, dt.datetime | None]]) -> Allowlist:
    """rows: (public IP, allocation id, association id, has an open claim, last seen) of each pool EIP. In numeric
    IP order: text order puts 10.0.0.10 before 10.0.0.9, and a partner compares lists by eye."""
    entries: list[tuple[ipaddress.IPv4Address | ipaddress.IPv6Address, AllowlistEntry]] = []
    newest: dt.datetime | None = None
    for public_ip, allocation_id, association_id, claimed, seen in rows:
        state = address_state(associated=bool(association_id), claimed=bool(claimed))
        entries.append((ipaddress.ip_address(public_ip), AllowlistEntry(public_ip, allocation_id, state)))
        if seen is not None and (newest is None or seen > newest):
            newest = seen
    entries.sort(key=lambda pair: (pair[0].version, pair[0], pair[1].allocation_id))
    return Allowlist(spec_name=spec_name, entries=tuple(entry for _key, entry in entries), updated_at=newest)


def etag_matches(if_none_match: str, etag: str) -> bool:
    """If-None-Match's weak comparison (RFC 9110 13.1.2): "*", or any tag of the list equal to ours once W/ is
    set aside on both sides."""
    header = if_none_match.strip()
    if not header:
        return False
    if header == "*":
        return True
    ours = etag.removeprefix("W/")
    return any(tag.removeprefix("W/") == ours for tag in _ENTITY_TAG.findall(header))
