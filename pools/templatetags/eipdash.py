"""Display helpers for the dashboard templates. Formatting only: no queries."""

from __future__ import annotations

import datetime as dt
import shlex
from collections.abc import Iterable

from django import template
from django.utils import timezone

from pools import selectors
from pools.models import ElasticIP, LaunchSpec

register = template.Library()


@register.filter
def eip_state(eip: ElasticIP) -> str:
    """free / assigned / conflict / gone, derived from the row (no query)."""
    return selectors.eip_state(eip)


@register.filter
def pool_spec_names(eip: ElasticIP, specs: Iterable[LaunchSpec]) -> list[str]:
    """Names of the given specs whose selector matches the EIP (no query: specs are passed in)."""
    return [spec.name for spec in selectors.launch_spec_for_eip(eip=eip, specs=specs)]


@register.filter
def duration(seconds: float | None) -> str:
    """0.4s, 12s, 3m 04s, 2h 05m: short enough for a table cell."""
    if seconds is None:
        return "—"
    if seconds < 10:
        # Time to EIP is often a second or less: "0s" would hide it.
        return f"{seconds:.1f}s"
    total = int(round(seconds))
    if total < 60:
        return f"{total}s"
    minutes, secs = divmod(total, 60)
    if minutes < 60:
        return f"{minutes}m {secs:02d}s"
    hours, minutes = divmod(minutes, 60)
    return f"{hours}h {minutes:02d}m"


@register.filter
def since(moment: dt.datetime | None) -> str:
    """'5s ago' for live tables; the exact time sits in the title attribute beside it."""
    if moment is None:
        return "—"
    return duration((timezone.now() - moment).total_seconds()) + " ago"


@register.filter
def shquote(value: object) -> str:
    """Quote for a POSIX shell, for the user-data snippet."""
    return shlex.quote(str(value))


@register.filter
def labels_text(labels: dict[str, str] | None) -> str:
    return ",".join(f"{key}={value}" for key, value in sorted((labels or {}).items()))


@register.filter
def iso(moment: dt.datetime | None) -> str:
    if moment is None:
        return ""
    return moment.astimezone(dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
