"""The node page (/nodes/<cluster>/<name>/): why the node is where it is, at the top, in words; its facts, its
timeline from first seen, and where its Kubernetes Events can be read. Read-only, from the record: the web
holds no Kubernetes credentials (docs/security.md), so the page says which command reads them.

A module of its own beside pools/views.py: the reader rule (eipdash/middleware.py) covers every pools.views*
module. The reason is decided by pools/node_reason.py, from the facts pools/selectors.py gathers.
"""

from __future__ import annotations

from typing import Any

from django.conf import settings
from django.contrib.auth.decorators import login_required
from django.http import Http404, HttpResponse
from django.utils import timezone
from django.views.decorators.http import require_GET

from . import node_reason, selectors, selectors_egress
from .views import HtmxHttpRequest, _page


@require_GET
@login_required
def node_detail(request: HtmxHttpRequest, cluster: str, name: str) -> HttpResponse:
    page = selectors.node_page(cluster=cluster, name=name)
    if page is None:
        raise Http404(f"no node {name!r} in cluster {cluster!r}: the record holds neither a node row nor any "
                      "history of one")
    now = timezone.now()
    facts = page.facts
    # Where its traffic leaves (its subnet's route), and whether that is not its EIP: a warning only when known.
    egress = selectors_egress.node_egress(page.node) if page.node is not None else None
    if facts is not None:
        reason = node_reason.node_reason(facts, now)
    else:
        reason = node_reason.history_only_reason(page.events[-1].timestamp, now)
    context: dict[str, Any] = {
        "page": page,
        "node": page.node,
        "facts": facts,
        "reason": reason,
        "stats": page.stats,
        "problems": selectors.spec_problem_list(stats=[page.stats]) if page.stats is not None else [],
        "timeline": node_reason.node_timeline(facts, page.events, now),
        "taints": node_reason.taint_notes(facts, settings.EIPDASH_STARTUP_TAINT) if facts is not None else [],
        "kubectl": node_reason.kubectl_events_command(page.name, context=page.kube_context,
                                                      kubeconfig=page.kubeconfig),
        "current_context": not page.kube_context and not page.kubeconfig,
        "kube_reasons": node_reason.KUBE_EVENT_REASONS,
        "last_event": page.events[-1] if page.events else None,
        "events_shown": selectors.NODE_EVENTS_SHOWN,
        # What the plan does with the node comes from the plan its spec's latest pass stored, with its age, as on
        # the spec page (stale: older than a few passes, for a spec that still has passes to come).
        "plan": page.plan,
        "plan_stale": page.plan is not None and page.plan.stale and page.stats is not None
        and (page.stats.spec.enabled or page.stats.held > 0),
        "reconcile_seconds": settings.EIPDASH_RECONCILE_SECONDS,
        "now": now,
        "egress": egress,
        "egress_bypasses_eip": egress is not None and selectors_egress.bypasses_eip(egress),
    }
    return _page(request, "pools/node_detail.html", "pools/partials/_node_live.html", context)
