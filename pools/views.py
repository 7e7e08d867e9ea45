"""Dashboard views: thin functions. They parse the request, call selectors (reads) or services (writes)
and render; the rules live there, where the commands and the workers use them too.

Pages read the database only; the workers keep it fresh. The one action that changes AWS, the manual
reassign, is recorded here and carried out by a worker; the page follows its status. When a request
comes from htmx, a view returns just its live partial, which the page polls every few seconds.
"""

from __future__ import annotations

import datetime as dt
import difflib
import hmac
import json
import logging
import re
import shlex
from typing import Any
from urllib.parse import urlencode

from django.conf import settings
from django.contrib import messages
from django.contrib.auth.decorators import login_required, permission_required
from django.core.paginator import Paginator
from django.db.models import QuerySet
from django.http import (
    Http404,
    HttpRequest,
    HttpResponse,
    HttpResponseBadRequest,
    JsonResponse,
    StreamingHttpResponse,
)
from django.http.response import HttpResponseBase
from django.shortcuts import redirect, render
from django.template.loader import render_to_string
from django.urls import reverse
from django.utils import timezone
from django.views.decorators.http import require_GET, require_http_methods, require_POST
from django_htmx.http import HttpResponseClientRedirect, reswap, retarget
from django_htmx.middleware import HtmxDetails
from prometheus_client import CONTENT_TYPE_LATEST

from eipdash.middleware import is_reader

from . import charts, charts_capacity, exports, health, selectors, selectors_egress, services
from .forms import (
    EipFilterForm,
    HistoryFilterForm,
    LaunchSpecForm,
    LaunchSpecImportForm,
    NodeFilterForm,
    ReassignForm,
)
from .metrics import exposition as metrics_exposition
from .models import ElasticIP, LaunchSpec, ReassignRequest
from .pool_rule import labels_text
from .selectors_capacity import capacity_report, demand_series
from .services import (
    launch_spec_apply,
    launch_spec_delete_refusal,
    pool_change_lines,
    reassign_refusal,
    reassign_request_submit,
)
from .services import launch_spec_delete as launch_spec_delete_service
from .specfile import CONTROL_RE, LaunchSpecInput, SpecFileError, launch_spec_to_ocean

logger = logging.getLogger(__name__)


class HtmxHttpRequest(HttpRequest):
    # Set by django_htmx's middleware; declared so that type checkers know it.
    htmx: HtmxDetails


PAGE_SIZE = 50
SPEC_NODES_SHOWN = 50  # the launch spec page's node and pool tables; /nodes/ and /eips/?spec=… page through all
REFRESH_SECONDS = 5
# The spec page's Capacity section loads on its own right after the page, then polls on its own, less often:
# its peaks, cost and chart stand on 30 days of nodes and assignments, and move over hours, not seconds.
CAPACITY_REFRESH_SECONDS = 30
CAPACITY_PART = "spec-capacity"  # the id of its live part: htmx names it in HX-Target when it loads and polls


def _bearer_is_metrics_token(request: HttpRequest) -> bool:
    """`Authorization: Bearer <EIPDASH_METRICS_TOKEN>`, compared in constant time; never while no token is set."""
    token = settings.EIPDASH_METRICS_TOKEN
    if not token:
        return False
    scheme, _, given = request.headers.get("Authorization", "").partition(" ")
    return scheme.lower() == "bearer" and hmac.compare_digest(given.strip().encode(), token.encode())


def healthz(request: HttpRequest) -> JsonResponse:
    """No login. 503 with the reasons when the database or Redis fails, or an enabled spec's last successful
    pass is older than 3 reconcile intervals. ``?scope=web`` checks the database only (the web pods' probes).
    The launch specs' names and pass ages only for a reader's session or the metrics token; anyone else (the
    probes) gets the status, the checks and counts, with the same status code."""
    report = health.check(timezone.now(), scope="web" if request.GET.get("scope") == "web" else "all")
    names = _bearer_is_metrics_token(request) or is_reader(request.user)
    return JsonResponse(report.as_json(names=names), status=200 if report.ok else 503)


def _page(request: HtmxHttpRequest, template: str, partial: str, context: dict[str, Any], status: int = 200):
    """The full page, or only its live partial when htmx polls it."""
    context.setdefault("refresh_seconds", REFRESH_SECONDS)
    if request.htmx:
        return render(request, partial, context, status=status)
    return render(request, template, context, status=status)


def _get_spec_or_404(name: str) -> LaunchSpec:
    spec = selectors.launch_spec_get(name=name)
    if spec is None:
        raise Http404(f"no launch spec named {name!r}")
    return spec


def _get_eip_or_404(allocation_id: str) -> ElasticIP:
    eip = selectors.eip_get(allocation_id=allocation_id)
    if eip is None:
        raise Http404(f"no Elastic IP {allocation_id!r}")
    return eip


def _spec_by_name(name: str, specs: list[LaunchSpec]) -> LaunchSpec | None:
    return next((spec for spec in specs if spec.name == name), None)


def _list_filters(
    request: HtmxHttpRequest, form_class: type[EipFilterForm] | type[NodeFilterForm]
) -> tuple[EipFilterForm | NodeFilterForm, dict[str, Any], list[LaunchSpec], LaunchSpec | None]:
    """A list page's filters: a value the form refuses is dropped (its default applies), never an error page."""
    form = form_class(request.GET)
    form.is_valid()
    specs = selectors.launch_spec_list()
    return form, form.cleaned_data, specs, _spec_by_name(form.cleaned_data.get("spec") or "", specs)


# --- Overview --------------------------------------------------------------------------------------


@require_GET
@login_required
def overview(request: HtmxHttpRequest) -> HttpResponse:
    stats = selectors.pool_stats_list()
    now = timezone.now()
    data_start = selectors.chart_data_start()
    # The range picker (?range=1h|6h|24h|7d); by default the smallest range that holds the data.
    range_key = request.GET.get("range", "")
    if range_key not in charts.RANGES:
        range_key = charts.fitted_range(data_start, now)
    hours, step_minutes, range_label = charts.RANGES[range_key]
    series = selectors.pool_use_series(stats=stats, now=now, hours=hours, step_minutes=step_minutes)
    histogram = selectors.time_to_eip_histogram(since=now - dt.timedelta(hours=hours))
    context = {
        "stats": stats,
        # Each alert ongoing or resolved by the specs' active alerts (the rows above: no query of its own).
        "alert_groups": selectors.alert_group_list(stats=stats),
        "problems": selectors.spec_problem_list(stats=stats),
        "use_chart": charts.pool_use_chart(series, range_key=range_key, data_start=data_start),
        "legend": charts.chart_legend(series),
        "histogram": histogram,
        "histogram_chart": charts.histogram_chart(histogram, range_label=range_label),
        "range_key": range_key,
        "range_label": range_label,
        "ranges": [(key, label) for key, (_hours, _step, label) in charts.RANGES.items()],
        "now": now,
    }
    return _page(request, "pools/overview.html", "pools/partials/_overview.html", context)


# --- Launch specs ----------------------------------------------------------------------------------


@require_GET
@login_required
def launch_spec_list(request: HtmxHttpRequest) -> HttpResponse:
    stats = selectors.pool_stats_list()
    context = {"stats": stats, "problems": selectors.spec_problem_list(stats=stats)}
    return _page(request, "pools/launch_spec_list.html", "pools/partials/_spec_table.html", context)


def _shell_word(value: object) -> str:
    """One inert shell word: control characters spelled out as \\uXXXX, then single-quoted.

    Validation refuses control characters, but rows older than that rule may hold them; a newline
    would end a comment line or a KEY=VALUE line of /etc/default/kubelet, so none reaches the script.
    """
    text = CONTROL_RE.sub(lambda found: f"\\u{ord(found.group()):04x}", str(value))
    return shlex.quote(text)


def _user_data(spec: LaunchSpec, pool_ips: list[str]) -> str:
    """The snippet as plain text (never marked safe): pages escape it like any other value.

    The script runs as root on every new node, so every value in it is a quoted shell word, comments
    included: the template interpolates nothing else.
    """
    labels = labels_text(spec.labels)
    words = {
        "name": _shell_word(spec.name),
        "cluster": _shell_word(spec.cluster.name),
        "region": _shell_word(spec.cluster.region),
        "selector": _shell_word(spec.selector_text()),
        "taint": _shell_word(f"{settings.EIPDASH_STARTUP_TAINT}=true:NoSchedule"),
        "labels": _shell_word(labels),
        "pool_ips": " ".join(_shell_word(ip) for ip in pool_ips),
    }
    # render_to_string returns a SafeString, which templates would print unescaped; str.__str__ makes a
    # plain str of it, so every page escapes the snippet like any other user text.
    return str.__str__(render_to_string("pools/user_data.sh", {"sh": words}))


def _capacity_context(request: HtmxHttpRequest, spec: LaunchSpec) -> dict[str, Any]:
    """The spec page's Capacity section: the report, the demand chart over the chosen range (?range=24h|7d|30d),
    the allowlist (the API's egress-ips, the same rows and order) and the nodes whose egress bypasses their EIP."""
    range_key = charts_capacity.range_of(request.GET.get("range", ""))
    hours, range_label = charts_capacity.RANGES[range_key]
    now = timezone.now()
    report = capacity_report(spec, now=now)
    addresses = selectors_egress.allowlist_of(spec)
    bypassing = selectors_egress.nodes_bypassing_eip(spec)
    # The chart's demand and pool size from the report's own (every range is within its 30 days): nothing is
    # read twice.
    series = demand_series(spec, now - dt.timedelta(hours=hours), now, report=report)
    return {
        "spec": spec,
        "capacity": report,
        "below_min_free": report.free < report.min_free,
        "demand_chart": charts_capacity.demand_chart(series, range_key=range_key),
        "demand_legend": charts_capacity.LEGEND,
        "capacity_range": range_key,
        "capacity_range_label": range_label,
        "capacity_ranges": [(key, label) for key, (_hours, label) in charts_capacity.RANGES.items()],
        "allowlist": addresses,
        "allowlist_text": addresses.text(),
        "bypassing": bypassing[:SPEC_NODES_SHOWN],
        "bypassing_total": len(bypassing),
        "capacity_refresh_seconds": CAPACITY_REFRESH_SECONDS,
    }


@require_GET
@login_required
def launch_spec_detail(request: HtmxHttpRequest, name: str) -> HttpResponse:
    spec = _get_spec_or_404(name)
    if request.htmx and request.htmx.target == CAPACITY_PART:
        # The Capacity section's first load and its polls: only its part, none of the rest of the page is read.
        return render(request, "pools/partials/_spec_capacity.html", _capacity_context(request, spec))
    # Like the nodes below: the first rows, with the count and a link to /eips/?spec=… (the whole pool made
    # this polled page hundreds of KB at a few hundred EIPs). The pool is read once for the rows, the count and
    # the user data's IPs.
    pool = selectors.pool_first_rows(spec=spec, size=SPEC_NODES_SHOWN)
    stats = selectors.pool_stats_get(spec=spec)
    # Ended nodes (gone, released) are hidden unless asked for: the table then counts what the tile counts.
    show_ended = request.GET.get("ended") == "1"
    # The first nodes only, with the count and a link to /nodes/?spec=…: a spec of hundreds of nodes (and
    # thousands of ended ones) made this page, polled every few seconds, hundreds of KB.
    nodes = selectors.node_list(spec=spec, hide_ended=not show_ended)
    # The plan the spec's latest pass stored: one row, no planner run on this request (polled every few seconds).
    plan = selectors.plan_preview(spec=spec)
    context = {
        "spec": spec,
        "stats": stats,
        "problems": selectors.spec_problem_list(stats=[stats]),
        "show_ended": show_ended,
        "pool": pool.rows,
        "pool_total": pool.total,
        "nodes": list(nodes[:SPEC_NODES_SHOWN]),
        "node_total": nodes.count() if show_ended else stats.nodes,
        "events": selectors.event_recent(spec_name=spec.name, limit=15),
        "plan": plan,
        # A spec with passes to come (enabled, or draining) whose last plan is older than a few passes.
        "plan_stale": plan.stale and (spec.enabled or stats.held > 0),
        "reconcile_seconds": settings.EIPDASH_RECONCILE_SECONDS,
        "taint_key": settings.EIPDASH_STARTUP_TAINT,
        "can_edit": request.user.has_perm("pools.change_launchspec"),
        "can_delete": request.user.has_perm("pools.delete_launchspec"),
    }
    if not request.htmx:
        # The whole page. The Capacity section is not read here: the page shows its frame, which htmx fills
        # right away from the section's own request (HX-Target above), so the page's first paint never waits for
        # 30 days of history. The 5-second poll of its live part reads neither that nor the user data (outside the
        # live part). The snippet's IPs: the pool's, in numeric order, as the allowlist and the download list them.
        context["user_data"] = _user_data(spec, pool.public_ips)
    return _page(request, "pools/launch_spec_detail.html", "pools/partials/_spec_live.html", context)


@require_GET
@login_required
def launch_spec_egress_ips(request: HtmxHttpRequest, name: str) -> HttpResponse:
    """The allowlist as a file: the API's `?format=txt`, one IP a line (the spec page's Download)."""
    spec = _get_spec_or_404(name)
    response = HttpResponse(selectors_egress.allowlist_of(spec).text(), content_type="text/plain; charset=utf-8")
    response["Content-Disposition"] = f'attachment; filename="{_file_stem(spec.name)}-egress-ips.txt"'
    return response


@require_GET
@login_required
def launch_spec_user_data(request: HtmxHttpRequest, name: str) -> HttpResponse:
    spec = _get_spec_or_404(name)
    response = HttpResponse(_user_data(spec, selectors.pool_public_ips(spec=spec)),
                            content_type="text/x-shellscript; charset=utf-8")
    response["Content-Disposition"] = f'attachment; filename="{_file_stem(spec.name)}-user-data.sh"'
    return response


@require_GET
@login_required
def launch_spec_export(request: HtmxHttpRequest, name: str) -> HttpResponse:
    spec = _get_spec_or_404(name)
    body = json.dumps(launch_spec_to_ocean(spec, min_free=False), indent=2) + "\n"
    response = HttpResponse(body, content_type="application/json")
    response["Content-Disposition"] = f'attachment; filename="{_file_stem(spec.name)}.json"'
    return response


def _file_stem(name: str) -> str:
    """A spec name fit for a Content-Disposition header: rows older than validation may hold quotes or
    newlines, which would break the header (and Django refuses a newline in one with a 500)."""
    return re.sub(r"[^A-Za-z0-9._-]", "_", name)[:200] or "launch-spec"


def _form_status(form: LaunchSpecForm | LaunchSpecImportForm) -> int:
    """400 for refused input, so that scripts and tests see the refusal; 200 for a blank form."""
    return 400 if form.is_bound and form.errors else 200


def _apply(request: HtmxHttpRequest, form: LaunchSpecForm | LaunchSpecImportForm) -> LaunchSpec | None:
    """One service call; a refusal from the service (e.g. region ≠ cluster's) lands on the form."""
    assert form.spec_input is not None
    try:
        spec, created = launch_spec_apply(data=form.spec_input, actor=request.user.get_username())
    except SpecFileError as exc:
        for message in exc.messages:
            form.add_error(None, message)
        return None
    messages.success(request, f"Launch spec {spec.name} {'created' if created else 'updated'}.")
    return spec


@require_http_methods(["GET", "POST"])
@login_required
@permission_required("pools.add_launchspec", raise_exception=True)
def launch_spec_create(request: HtmxHttpRequest) -> HttpResponse:
    form = LaunchSpecForm(request.POST or None, initial={"enabled": True})
    if request.method == "POST" and form.is_valid():
        if selectors.launch_spec_get(name=form.cleaned_data["name"]) is not None:
            form.add_error("name", "a launch spec with this name exists; edit it instead")
        elif (spec := _apply(request, form)) is not None:
            return redirect("launch-spec-detail", name=spec.name)
    return render(request, "pools/launch_spec_form.html", {"form": form, "spec": None}, status=_form_status(form))


@require_http_methods(["GET", "POST"])
@login_required
@permission_required("pools.change_launchspec", raise_exception=True)
def launch_spec_edit(request: HtmxHttpRequest, name: str) -> HttpResponse:
    spec = _get_spec_or_404(name)
    form = LaunchSpecForm(request.POST or None, instance=spec)
    if request.method == "POST" and form.is_valid() and (saved := _apply(request, form)) is not None:
        return redirect("launch-spec-detail", name=saved.name)
    return render(request, "pools/launch_spec_form.html", {"form": form, "spec": spec}, status=_form_status(form))


@require_POST
@login_required
@permission_required("pools.change_launchspec", raise_exception=True)
def launch_spec_disable(request: HtmxHttpRequest, name: str) -> HttpResponse:
    """Disable and drain: only the switch flips, so that a row whose old fields no longer validate still stops."""
    spec = _get_spec_or_404(name)
    try:
        services.launch_spec_disable(name=spec.name, actor=request.user.get_username())
    except SpecFileError as exc:
        messages.error(request, "Not disabled: " + "; ".join(exc.messages))
    else:
        messages.success(request, f"Launch spec {spec.name} disabled: it drains now (no new EIP, no new taint).")
    return redirect("launch-spec-detail", name=spec.name)


@require_http_methods(["GET", "POST"])
@login_required
@permission_required("pools.delete_launchspec", raise_exception=True)
def launch_spec_delete(request: HtmxHttpRequest, name: str) -> HttpResponse:
    """Delete, with the CLI's rule: a spec that still holds EIPs is refused (disable it and let it drain)."""
    spec = _get_spec_or_404(name)
    stats = selectors.pool_stats_get(spec=spec)
    error = ""
    if request.method == "POST":
        try:
            launch_spec_delete_service(name=spec.name, actor=request.user.get_username())
        except (SpecFileError, LaunchSpec.DoesNotExist) as exc:
            error = "; ".join(exc.messages) if isinstance(exc, SpecFileError) else str(exc)
        else:
            messages.success(request, f"Launch spec {spec.name} deleted. Its history is kept.")
            return redirect("launch-spec-list")
    context = {"spec": spec, "stats": stats, "error": error, "refusal": launch_spec_delete_refusal(spec)}
    return render(request, "pools/launch_spec_delete.html", context, status=409 if error else 200)


def _import_diff(form: LaunchSpecImportForm) -> str:
    """The change an import would make to an existing spec, as a unified diff of its Ocean JSON; for a new spec,
    the EIPs its pool would take (unmanaged ones, or another pool's); "" when there is nothing to confirm."""
    assert form.spec_input is not None
    current = selectors.launch_spec_get(name=form.spec_input.name)
    if current is None:
        return "\n".join(pool_change_lines(form.spec_input, None))
    before = json.dumps(launch_spec_to_ocean(current), indent=2, sort_keys=True).splitlines()
    after = json.dumps(_ocean_of_input(form.spec_input, current), indent=2, sort_keys=True).splitlines()
    diff = list(difflib.unified_diff(before, after, "current", "imported", lineterm="", n=2))
    # Then the EIPs the new selector takes into the pool or lets go, as the sync's diff says them.
    diff += pool_change_lines(form.spec_input, current) if diff else []
    return "\n".join(diff)  # "" when nothing would change: no confirmation needed


def _ocean_of_input(data: LaunchSpecInput, current: LaunchSpec) -> dict[str, Any]:
    """The imported input in the same Ocean shape as the export of the current spec, field for field."""
    spec: dict[str, Any] = {
        "name": data.name,
        "labels": [{"key": key, "value": value} for key, value in sorted(data.labels.items())],
        "elasticIpPool": {"tagSelector": {"tagKey": data.tag_key, **({"tagValue": data.tag_value}
                                                                    if data.tag_value is not None else {})}},
        "region": data.region or current.cluster.region,
        "cluster": data.cluster or current.cluster.name,
        "enabled": data.enabled,
    }
    exported = launch_spec_to_ocean(current)["launchSpec"]
    return {"launchSpec": {key: spec.get(key, value) for key, value in exported.items()}}


@require_http_methods(["GET", "POST"])
@login_required
@permission_required("pools.add_launchspec", raise_exception=True)
@permission_required("pools.change_launchspec", raise_exception=True)
def launch_spec_import(request: HtmxHttpRequest) -> HttpResponse:
    form = LaunchSpecImportForm(request.POST or None, request.FILES or None)
    diff = ""
    if request.method == "POST" and form.is_valid():
        diff = _import_diff(form)
        # An import that would overwrite a spec, or whose new pool would take EIPs, shows that first; the operator
        # confirms it.
        if (not diff or request.POST.get("confirm") == "overwrite") and (spec := _apply(request, form)) is not None:
            return redirect("launch-spec-detail", name=spec.name)
    new = form.spec_input is not None and selectors.launch_spec_get(name=form.spec_input.name) is None
    context = {"form": form, "diff": diff, "new": new}
    return render(request, "pools/launch_spec_import.html", context, status=_form_status(form))


# --- EIPs ------------------------------------------------------------------------------------------


@require_GET
@login_required
def eip_list(request: HtmxHttpRequest) -> HttpResponse:
    form, data, specs, spec = _list_filters(request, EipFilterForm)
    state, q, sort = data.get("state") or "", data.get("q") or "", data.get("sort") or "ip"
    unmanaged = state == selectors.UNMANAGED
    qs: QuerySet[Any] | list[Any] | selectors.PagedRows[Any]
    if unmanaged:
        # The region's EIPs in no pool: none of them belongs to a spec, so a spec filter leaves nothing.
        qs = [] if spec is not None else selectors.unmanaged_list(q=q, sort=sort)
    else:
        qs = selectors.PagedRows(selectors.eip_list(q=q, spec=spec, state=state, sort=sort))
    page = Paginator(qs, PAGE_SIZE).get_page(request.GET.get("page"))
    context = {"form": form, "page": page, "specs": specs, "sort": sort, "unmanaged": unmanaged,
               "unmanaged_count": 0 if unmanaged else selectors.unmanaged_count()}
    return _page(request, "pools/eip_list.html", "pools/partials/_eip_table.html", context)


def _eip_context(request: HtmxHttpRequest, eip: ElasticIP) -> dict[str, Any]:
    assignment = selectors.eip_open_assignment(eip=eip)
    pool_specs = selectors.launch_spec_for_eip(eip=eip)
    spec = assignment.launch_spec if assignment and assignment.launch_spec else None
    if spec is None and len(pool_specs) == 1:
        spec = pool_specs[0]
    can_reassign = request.user.has_perm("pools.reassign_elasticip")
    targets = (
        selectors.node_reassign_targets(spec=spec, exclude_node_id=assignment.node_id if assignment else None)
        if spec is not None and can_reassign and not eip.gone
        else []
    )
    return {
        "eip": eip,
        "assignment": assignment,
        "spec": spec,
        "pool_specs": pool_specs,
        "events": selectors.event_recent(allocation_id=eip.allocation_id, limit=50),
        "can_reassign": can_reassign,
        "targets": targets,
    }


@require_GET
@login_required
def eip_detail(request: HtmxHttpRequest, allocation_id: str) -> HttpResponse:
    eip = _get_eip_or_404(allocation_id)
    context = _eip_context(request, eip)
    moved = request.GET.get("moved", "")
    if moved.isascii() and moved.isdigit() and len(moved) < 19:
        done = selectors.reassign_request_get(allocation_id=allocation_id, request_id=int(moved))
        if done is not None and done.state == ReassignRequest.State.DONE:
            context["notice"] = done.message or f"{eip.public_ip} moved to {done.node_name}."
    return _page(request, "pools/eip_detail.html", "pools/partials/_eip_live.html", context)


def _reassign_consequence(eip: ElasticIP, spec: LaunchSpec | None) -> dict[str, Any]:
    assignment = selectors.eip_open_assignment(eip=eip)
    free = selectors.pool_stats_get(spec=spec).free if spec is not None else 0
    return {"assignment": assignment, "free": free}


def _not_offered(eip: ElasticIP, node_name: str) -> str:
    return (f"{node_name} cannot take {eip.public_ip} now: as the last pass saw it, it drains, holds an EIP, has no "
            "primary private IPv4 yet or is not running. Choose another node.")


def _reassign_dialog(request: HtmxHttpRequest, eip: ElasticIP, *, target: str = "", notice: str = "",
                     reassign: ReassignRequest | None = None) -> HttpResponse:
    """The reassign dialog, read anew at each step: its targets come from the last snapshot, never from the
    list the page showed when it loaded. One of three steps:

    - choose: the fresh targets (focus on the list), with why when the one asked for is not among them or a
      worker refused it;
    - confirm: what the move to `target` will do; focus on Cancel, so Enter, Enter never moves an IP;
    - follow: the request's status while a worker moves it; no Move button, so it cannot be sent twice.

    As a modal fragment under htmx, as a page without JavaScript."""
    context = _eip_context(request, eip)
    context.update(_reassign_consequence(eip, context["spec"]))
    blocked = reassign_refusal(eip=eip, state=selectors.eip_state(eip))
    offered = {node.name for node in context["targets"]}
    if reassign is not None:
        step = "follow"
        context.update(_reassign_status_context(reassign))
    elif target and target in offered and blocked is None:
        step = "confirm"
    else:
        step = "choose"
        # The same refusal as the worker's: say it before the operator confirms anything.
        notice = blocked or notice or (_not_offered(eip, target) if target else "")
    context.update({"step": step, "target": target, "notice": notice, "blocked": blocked})
    if request.htmx:
        return render(request, "pools/partials/_reassign_dialog.html", context)
    return render(request, "pools/eip_reassign_confirm.html", context)


def _in_dialog(response: HttpResponse) -> HttpResponse:
    """An answer to something inside the open dialog replaces the whole dialog (its buttons change with it)."""
    return reswap(retarget(response, "#reassign-dialog"), "outerHTML")


@require_GET
@login_required
@permission_required("pools.reassign_elasticip", raise_exception=True)
def eip_reassign_confirm(request: HtmxHttpRequest, allocation_id: str) -> HttpResponse:
    """What will happen, before anything happens. Without a node (the inventory's row action, a refusal),
    or with one that can no longer take it, the choice of targets first."""
    eip = _get_eip_or_404(allocation_id)
    form = ReassignForm(request.GET)
    return _reassign_dialog(request, eip, target=form.cleaned_data["node"] if form.is_valid() else "")


@require_POST
@login_required
@permission_required("pools.reassign_elasticip", raise_exception=True)
def eip_reassign(request: HtmxHttpRequest, allocation_id: str) -> HttpResponse:
    """Record the operator's intent, enqueue the move on commit, answer with its status (which polls)."""
    eip = _get_eip_or_404(allocation_id)
    form = ReassignForm(request.POST)
    error = "Choose a target node." if not form.is_valid() else reassign_refusal(eip=eip,
                                                                                 state=selectors.eip_state(eip))
    context = _eip_context(request, eip)
    if error is None and form.cleaned_data["node"] not in {node.name for node in context["targets"]}:
        # The dialog was read a while ago: a target the last pass saw draining is not worth a worker's trip.
        error = _not_offered(eip, form.cleaned_data["node"])
    if error is not None:
        if request.htmx:
            # 200 so that htmx swaps it in: the dialog says why, with the targets as they are now.
            return _in_dialog(_reassign_dialog(request, eip, notice=error))
        context["reassign_error"] = error
        return render(request, "pools/eip_detail.html", context, status=409)
    reassign = reassign_request_submit(eip=eip, node_name=form.cleaned_data["node"],
                                       actor=request.user.get_username())
    if request.htmx:
        return _in_dialog(_reassign_dialog(request, eip, reassign=reassign))
    return redirect("eip-reassign-status", allocation_id=eip.allocation_id, request_id=reassign.pk)


def _reassign_status_context(reassign: ReassignRequest) -> dict[str, Any]:
    return {
        "reassign": reassign,
        "eip": reassign.eip,
        "waited_seconds": int((timezone.now() - reassign.created_at).total_seconds()),
        "poll_seconds": 1,
    }


@require_GET
@login_required
@permission_required("pools.reassign_elasticip", raise_exception=True)
def eip_reassign_status(request: HtmxHttpRequest, allocation_id: str, request_id: int) -> HttpResponse:
    """Where a requested move stands. Under htmx the partial polls itself until the move ends; a finished
    move sends the page back to the EIP. Without JS, the page has a link to look again."""
    reassign = selectors.reassign_request_get(allocation_id=allocation_id, request_id=request_id)
    if reassign is None:
        raise Http404(f"no reassign request {request_id} for {allocation_id!r}")
    context = _reassign_status_context(reassign)
    detail_url = reverse("eip-detail", args=[allocation_id])
    if request.htmx:
        if reassign.state == ReassignRequest.State.DONE:
            # The word of the move goes in the address, not in a flash message: htmx sends the poll that came
            # due meanwhile right after this answer, and its redirect starts the page load again; a cookie's
            # message would be taken by the first load, and the page shown would not say it.
            return HttpResponseClientRedirect(f"{detail_url}?{urlencode({'moved': reassign.pk})}")
        if reassign.state == ReassignRequest.State.REFUSED:
            # Nothing changed: no Move for the refused node, the reason, and the targets as they are now
            # (the worker's own reading was just written, so a node it found draining is gone from them).
            return _in_dialog(_reassign_dialog(request, _get_eip_or_404(allocation_id),
                                               notice=f"Refused, nothing was changed: {reassign.message}"))
        return render(request, "pools/partials/_reassign_status.html", context)
    page = _eip_context(request, _get_eip_or_404(allocation_id))
    page.update(context)
    page["reassign_status"] = True
    return render(request, "pools/eip_detail.html", page)


# --- Nodes -----------------------------------------------------------------------------------------


@require_GET
@login_required
def node_list(request: HtmxHttpRequest) -> HttpResponse:
    form, data, specs, spec = _list_filters(request, NodeFilterForm)
    qs = selectors.node_list(q=data.get("q") or "", spec=spec, state=data.get("state") or "", hide_ended=True)
    page = Paginator(selectors.PagedRows(qs), PAGE_SIZE).get_page(request.GET.get("page"))
    context = {"form": form, "page": page, "specs": specs}
    return _page(request, "pools/node_list.html", "pools/partials/_node_table.html", context)


# --- History ---------------------------------------------------------------------------------------


@require_GET
@login_required
def history(request: HtmxHttpRequest) -> HttpResponse:
    form = HistoryFilterForm(request.GET)
    valid = form.is_valid()
    before = request.GET.get("before", "")
    if before and not _cursor_ok(before):
        before = ""  # a cursor the database cannot compare with: the first page, like a garbled one
    filter_query = request.GET.copy()
    filter_query.pop("before", None)
    filter_query.pop("newer", None)
    newer = request.GET.get("newer", "")
    if newer and not _cursor_ok(newer):
        newer = ""  # the same guard as `before`: a cursor the database cannot compare with is ignored
    if request.htmx and newer:
        # The newest page polls only for a count: rows are never inserted above the one being read.
        count = selectors.event_count_newer(filters=form.filters(), after=newer) if valid else 0
        return render(request, "pools/partials/_history_new.html",
                      {"count": count, "newer": newer, "filter_query": filter_query.urlencode(),
                       "refresh_seconds": REFRESH_SECONDS})
    # A filter that cannot be read shows its error and no rows: rows filtered by half the filter would
    # pass for the answer.
    page = (selectors.event_page(filters=form.filters(), before=before, size=PAGE_SIZE) if valid
            else selectors.EventPage(events=[], next_cursor=None))
    context = {
        "form": form,
        "page": page,
        "before": before,
        "filter_query": filter_query.urlencode(),
        "spec_names": [spec.name for spec in selectors.launch_spec_list()],
        "valid": valid,
        "quick_ranges": _quick_ranges(request),
        "top_cursor": selectors.encode_cursor(page.events[0]) if page.events else "",
    }
    # A refused filter is a 400 on the page; the live partial stays 200 so that polling does not raise
    # the error banner every few seconds for a mistake the page already shows.
    status = 400 if not valid and not request.htmx else 200
    return _page(request, "pools/history.html", "pools/partials/_history_table.html", context, status=status)


def _quick_ranges(request: HttpRequest) -> list[tuple[str, str]]:
    """'1 h', '24 h', '7 d' links: the same filters from that long ago (UTC, to the second) until now."""
    now = timezone.now().astimezone(dt.UTC).replace(microsecond=0)
    ranges = []
    for label, delta in (("1 h", dt.timedelta(hours=1)), ("24 h", dt.timedelta(days=1)), ("7 d", dt.timedelta(days=7))):
        query = request.GET.copy()
        for key in ("before", "newer", "until"):
            query.pop(key, None)
        query["since"] = (now - delta).strftime("%Y-%m-%dT%H:%M:%S")
        ranges.append((label, query.urlencode()))
    return ranges


def _cursor_ok(raw: str) -> bool:
    """A cursor the database can compare with: a UTC instant within range and a 64-bit id."""
    cursor = selectors.decode_cursor(raw)
    if cursor is None:
        return False
    moment, number = cursor
    try:
        moment.astimezone(dt.UTC)
    except OverflowError:
        return False
    return 0 <= number < 2**63


@require_GET
@login_required
def history_export(request: HtmxHttpRequest, fmt: str) -> HttpResponseBase:
    form = HistoryFilterForm(request.GET)
    if not form.is_valid():
        # An export must be exactly the filtered set; with a filter we cannot read, refuse.
        return HttpResponseBadRequest(
            "bad filter: " + "; ".join(f"{k}: {' '.join(str(e) for e in v)}" for k, v in form.errors.items()),
            content_type="text/plain",
        )
    _render, content_type = exports.FORMATS[fmt]
    events = selectors.event_list(filters=form.filters())
    # The query runs and the first chunk is rendered before the 200 goes out: a failure here is a 500,
    # never a 200 with a cut body. A failure midway raises out of the stream, so the server drops the
    # connection without the last chunk, and the file lacks its trailer (see pools/exports.py).
    response = StreamingHttpResponse(exports.open_export(events, fmt), content_type=content_type)
    response["Content-Disposition"] = f'attachment; filename="{_history_file_stem(form)}.{fmt}"'
    return response


def _history_file_stem(form: HistoryFilterForm) -> str:
    """What the export holds, in its file name: eipdash-history-egress-web-released-2026-12-01-to-2026-12-07.

    The spec, the event kind, the search text and the time range when given; without a range, the day of the
    export (the file holds the history as of then). Only [A-Za-z0-9._-], whatever the filter held, so the
    Content-Disposition header stays intact."""
    data = form.cleaned_data
    parts = ["eipdash-history"]
    for key, prefix in (("spec", ""), ("event", ""), ("q", "search-")):
        text = _file_name_part(data.get(key) or "")
        if text:
            parts.append(prefix + text)
    since, until = data.get("since"), data.get("until")
    if since is not None and until is not None:
        parts.append(f"{_file_moment(since)}-to-{_file_moment(until)}")
    elif since is not None:
        parts.append(f"from-{_file_moment(since)}")
    elif until is not None:
        parts.append(f"to-{_file_moment(until)}")
    else:
        parts.append(timezone.now().astimezone(dt.UTC).strftime("%Y-%m-%d"))
    return "-".join(parts)[:200]


def _file_name_part(text: str) -> str:
    """A filter value fit for a file name: runs of other characters become one '_', 40 characters at most."""
    return re.sub(r"[^A-Za-z0-9._-]+", "_", text).strip("_.")[:40].strip("_.")


def _file_moment(moment: dt.datetime) -> str:
    """A UTC instant to the second, as short as it stays so: 2026-12-07, 2026-12-07T0206, 2026-12-07T020615."""
    utc = moment.astimezone(dt.UTC)
    if (utc.hour, utc.minute, utc.second) == (0, 0, 0):
        return utc.strftime("%Y-%m-%d")
    return utc.strftime("%Y-%m-%dT%H%M" if utc.second == 0 else "%Y-%m-%dT%H%M%S")


# --- Metrics ---------------------------------------------------------------------------------------


@require_GET
def metrics(request: HttpRequest) -> HttpResponse:
    if settings.EIPDASH_METRICS_TOKEN:
        if not _bearer_is_metrics_token(request):
            response = HttpResponse("unauthorized\n", status=401, content_type="text/plain")
            response["WWW-Authenticate"] = 'Bearer realm="eipdash metrics"'
            return response
    elif not request.user.is_authenticated:
        # A scraper, not a browser: 401, never a redirect to the login page.
        return HttpResponse("unauthorized\n", status=401, content_type="text/plain")
    return HttpResponse(metrics_exposition(), content_type=CONTENT_TYPE_LATEST)
