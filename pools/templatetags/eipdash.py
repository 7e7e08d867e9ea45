"""Display helpers for the dashboard templates. Formatting only: no queries."""

from __future__ import annotations

import datetime as dt
import shlex
from collections.abc import Iterable

from django import template
from django.urls import reverse
from django.utils import timezone
from django.utils.html import conditional_escape, format_html

from pools import alerts, selectors
from pools.models import ElasticIP, LaunchSpec, Node
from pools.pool_rule import labels_text as _labels_text

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
    return _labels_text(labels)


@register.filter
def iso(moment: dt.datetime | None) -> str:
    if moment is None:
        return ""
    return moment.astimezone(dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


# One vocabulary for every label the dashboard prints: the event kinds and alert keys as people say them.
KIND_LABELS = {
    "assigned": "assigned",
    "released": "released",
    "reassigned": "reassigned",
    "adopted": "adopted",
    "taint_lifted": "taint lifted",
    "pool_exhausted": "pool exhausted",
    "pool_low": "pool low",
    "pool_joined": "joined the pool",
    "pool_left": "left the pool",
    "egress_not_via_eip": "egress not via EIP",
    "conflict": "conflict",
    "error": "error",
}


@register.filter
def kind_label(kind: str) -> str:
    """'pool_exhausted' → 'pool exhausted'."""
    return KIND_LABELS.get(kind, str(kind).replace("_", " "))


@register.filter
def alert_label(key: str) -> str:
    """An active alert key of the workers ('node-foreign-eip:ip-10-0-1-1') as a sentence."""
    return alerts.alert_label(key)


@register.filter
def alert_kind(key: str) -> str:
    """The event kind an active alert key belongs to (for its badge colour)."""
    return alerts.alert_kind(key)


@register.filter
def node_state(node: Node) -> str:
    """The state word of a node: one that ended without ever holding an EIP is not 'released'."""
    if node.state == Node.State.RELEASED and node.eip_ready_at is None:
        return "ended"
    return str(node.state)


@register.simple_tag
def plural(count: int, singular: str, plural_form: str = "") -> str:
    """'1 node', '2 nodes': never '1 node(s)'."""
    return f"{count} {singular if count == 1 else (plural_form or singular + 's')}"


@register.filter
def problems_of(problems: Iterable[selectors.SpecProblem], spec: LaunchSpec) -> list[selectors.SpecProblem]:
    """The problems of one spec, from the overview's list (no query)."""
    return [problem for problem in problems if problem.spec.pk == spec.pk]


# --- links to the node page ----------------------------------------------------------------------


@register.simple_tag
def node_link(cluster: str, name: str) -> str:
    """A node's name as a link to its page (/nodes/<cluster>/<name>/); "—" without a name, the bare name when the
    cluster is not known (an event older than clusters)."""
    if not name:
        return "—"
    if not cluster:
        return conditional_escape(name)
    return format_html('<a class="mono" href="{}">{}</a>', reverse("node-detail", args=[cluster, name]), name)


# The alerts whose subject is a node name (alerts.alert_key(<alert>, node.name)).
NODE_ALERTS = frozenset({alerts.Alert.NODE_FOREIGN_EIP, alerts.Alert.NODE_TWO_SPECS, alerts.Alert.NODE_NO_IPV4})


@register.simple_tag
def alert_label_linked(cluster: str, key: str) -> str:
    """alert_label, with the node it names as a link to the node's page."""
    name, node = alerts.alert_name(key), str(key).partition(":")[2]
    if name not in NODE_ALERTS or not node:
        return conditional_escape(alerts.alert_label(key))
    before, _subject, after = alerts.LABEL[name].partition("{}")
    return format_html("{}{}{}", before, node_link(cluster, node), after)


@register.filter
def spec_cluster(spec_name: str, stats: Iterable[selectors.PoolStats]) -> str:
    """The cluster of the launch spec of that name, from the page's pool rows (no query); "" when none is."""
    return next((row.spec.cluster.name for row in stats if row.spec.name == spec_name), "")
