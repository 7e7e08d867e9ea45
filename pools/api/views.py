"""The API's views: thin, like the dashboard's. Reads go through `pools.selectors`, writes through
`pools.services`, launch-spec documents through `pools.specfile`, so that the API, the CLI and the pages
accept, refuse and answer alike (the same problem texts)."""

from __future__ import annotations

import dataclasses
import datetime as dt
import re
from typing import Any

from django.conf import settings
from django.core import signing
from django.core.exceptions import RequestDataTooBig
from django.db import connections, models
from django.db.models import Q, QuerySet
from django.http import HttpRequest, JsonResponse
from django.urls import reverse
from django.views.decorators.csrf import csrf_exempt
from drf_spectacular.openapi import AutoSchema
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import (
    OpenApiParameter,
    OpenApiResponse,
    PolymorphicProxySerializer,
    extend_schema,
    inline_serializer,
)
from drf_spectacular.views import SpectacularSwaggerSplitView
from rest_framework import exceptions, serializers, status
from rest_framework.generics import ListAPIView
from rest_framework.pagination import BasePagination
from rest_framework.renderers import JSONRenderer
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.utils.urls import replace_query_param
from rest_framework.views import APIView

from pools import audit, selectors, services
from pools.forms import EipFilterForm, NodeEventFilterForm, NodeFilterForm
from pools.models import ApiToken, LaunchSpec
from pools.specfile import (
    DNS_SUBDOMAIN_RE,
    NAME_MAX,
    SpecFileError,
    cluster_name_problem,
    control_problem,
    launch_spec_to_ocean,
    load_spec_json,
    parse_launch_spec,
)

from . import serializers as s
from .auth import require_permissions

SPEC_WRITE = ("pools.add_launchspec", "pools.change_launchspec")
PROBLEMS = OpenApiResponse(s.ProblemsSerializer, description="refused: `problems` lists every reason")


class ApiSchema(AutoSchema):
    """Every operation's refusals in the schema, as the API answers them (`{"detail": ...}`): 401 without valid
    credentials, 403 for a role that may not, 429 over the rate limit, and 404 where the path names an object."""

    REFUSALS = {
        "401": "not authenticated: no token or session, or the token is invalid, expired or revoked",
        "403": "the account's role may not do this (or the session's CSRF token is missing)",
        "404": "no such object",
        "429": "over the rate limit (EIPDASH_API_RATE per user); Retry-After says when to try again",
    }

    def _get_response_bodies(self, direction: Any = "response") -> dict[str, Any]:
        responses: dict[str, Any] = super()._get_response_bodies(direction)
        if isinstance(self.view, ListAPIView):
            responses.setdefault("400", self._get_response_for_code(
                OpenApiResponse(s.ProblemsSerializer, description="a bad filter, limit or cursor: `problems` says "
                                                                  "which"), "400", direction=direction))
        for code, description in self.REFUSALS.items():
            # PUT creates what it does not find.
            if code == "404" and ("{" not in self.path or self.method == "PUT"):
                continue
            responses.setdefault(code, self._get_response_for_code(
                OpenApiResponse(s.ProblemsSerializer, description=description), code, direction=direction))
        return responses


@csrf_exempt
def not_found(request: HttpRequest, *args: Any, **kwargs: Any) -> JsonResponse:
    """Any other path under /api/: a JSON 404, never the dashboard's HTML page. Exempt from CSRF: it changes
    nothing, and checked, an unsafe method on it got Django's HTML CSRF page (403) instead of the 404."""
    return JsonResponse({"detail": f"no API endpoint at {request.path}; the reference is at /api/docs/"},
                        status=404)


def _document(request: Request) -> object:
    """The request's JSON, decoded as `launchspec apply` decodes a file (the same refusals, one line each)."""
    try:
        raw = request.body
    except RequestDataTooBig:
        raise SpecFileError([f"the body is larger than {settings.DATA_UPLOAD_MAX_MEMORY_SIZE} bytes"]) from None
    return load_spec_json(raw)


def node_name_problem(value: object) -> str | None:
    """A Kubernetes node name: a DNS subdomain of at most 253 characters (never echoed when it is not one)."""
    if not isinstance(value, str) or not value:
        return "give the target node's name as a string"
    if problem := control_problem("the node name", value):
        return problem
    if len(value) > 253 or not DNS_SUBDOMAIN_RE.fullmatch(value):
        return ("not a Kubernetes node name: at most 253 lowercase letters, digits, '-' and '.', "
                "alphanumeric at both ends")
    return None


def request_actor(request: Request) -> str:
    """The history's actor of an API call: the user, and the token's clear prefix when a token was used."""
    username = request.user.get_username()
    return audit.token_actor(username, request.auth.prefix) if isinstance(request.auth, ApiToken) else username


def _problems(detail: str, problems: list[str], code: int) -> Response:
    return Response({"detail": detail, "problems": problems}, status=code)


def _form_problems(form: Any) -> list[str]:
    return [f"{field}: {' '.join(str(e) for e in errors)}" for field, errors in form.errors.items()]


def _spec_or_404(name: str) -> LaunchSpec:
    spec = selectors.launch_spec_get(name=name)
    if spec is None:
        raise exceptions.NotFound(f"no launch spec named {name!r}")
    return spec


class DocsView(SpectacularSwaggerSplitView):
    """Swagger UI on the schema; its refusals (401, 403, 429) in JSON like the rest of /api/."""

    def handle_exception(self, exc: Exception) -> Response:
        response = super().handle_exception(exc)
        self.request.accepted_renderer = JSONRenderer()
        self.request.accepted_media_type = JSONRenderer.media_type
        return response


class Pagination(BasePagination):
    """Keyset pages on (a field, id), in a fixed order: a page never skips or repeats a row when rows are added
    meanwhile, and ties on the field (1,000s of events of one timestamp, a node name in two clusters) are
    ordered by id, so that following `next` always ends. `next` is the URL of the next page, null on the last.
    The history page pages the same way (`selectors.event_page`).

    A cursor is signed (an HMAC with SECRET_KEY, salted with the list's model and key field): a list takes back
    only the cursors it wrote, never a forged one or another list's. Its values are checked against their fields
    all the same, so that a cursor of an older format or signed with a leaked key never reaches the database."""

    page_size = 100
    max_page_size = 1000
    key = "id"  # the first ordering field, "-field" for descending; id breaks ties
    # The longest cursor this API writes is about 430 characters (a 253-character node name): anything much
    # longer is refused before its HMAC is computed.
    max_cursor_length = 1000
    CURSOR_REFUSED = "cursor: not one of this list's cursors; take it from a page's `next`"

    def paginate_queryset(self, queryset: QuerySet[Any], request: Request, view: Any = None) -> list[Any]:
        self.request = request
        limit = self._limit(request)
        descending = self.key.startswith("-")
        name, op = self.key.lstrip("-"), "lt" if descending else "gt"
        rows = queryset.order_by(self.key, "-id" if descending else "id")
        if raw := request.query_params.get("cursor"):
            value, pk = self.decode(queryset.model, raw, using=queryset.db)
            # `field <= v AND (field < v OR id < n)`, as event_page: the database still range-scans the index.
            rows = rows.filter(**{f"{name}__{op}e": value}).filter(
                Q(**{f"{name}__{op}": value}) | Q(**{f"id__{op}": pk}))
        page = list(rows[: limit + 1])
        self.next_cursor = (self.encode(queryset.model, getattr(page[limit - 1], name), page[limit - 1].pk)
                            if len(page) > limit else None)
        return page[:limit]

    def _limit(self, request: Request) -> int:
        raw = request.query_params.get("limit")
        if raw is None:
            return self.page_size
        # ASCII digits only: str.isdigit() also takes '²' (int() then fails) and other scripts' digits.
        if not re.fullmatch(r"[0-9]{1,9}", raw) or not 1 <= int(raw) <= self.max_page_size:
            raise exceptions.ValidationError({"detail": "bad filter",
                                              "problems": [f"limit: a number from 1 to {self.max_page_size}"]})
        return int(raw)

    @classmethod
    def _signer(cls, model: type[models.Model]) -> signing.Signer:
        # One list refuses another's cursors: the salt names the model (the EIPs and the unmanaged EIPs are
        # both keyed on allocation_id) and the key field (one model's rows in another order).
        return signing.Signer(salt=f"pools.api.cursor:{model._meta.label_lower}:{cls.key}")

    @classmethod
    def encode(cls, model: type[models.Model], value: object, pk: object) -> str:
        """The cursor of a row of this list: its key field's value and its id, signed."""
        text = value.isoformat() if isinstance(value, dt.datetime) else value
        return cls._signer(model).sign_object([text, pk])

    @classmethod
    def decode(cls, model: type[models.Model], raw: str, *, using: str = "default") -> tuple[Any, int]:
        """A cursor's (value, id), each fit for its column; anything else is a 400 that names the cursor."""
        field = model._meta.get_field(cls.key.lstrip("-"))
        try:
            if len(raw) > cls.max_cursor_length:
                raise ValueError("too long")
            loaded = cls._signer(model).unsign_object(raw)
            if not isinstance(loaded, list) or len(loaded) != 2:
                raise ValueError("not [value, id]")
            value = cls._column_value(field, loaded[0], using=using)
            pk = cls._column_value(model._meta.pk, loaded[1], using=using)
            if pk < 1:
                raise ValueError("ids start at 1")
        except (signing.BadSignature, ValueError, TypeError, OverflowError):
            raise exceptions.ValidationError({"detail": "bad filter", "problems": [cls.CURSOR_REFUSED]}) from None
        return value, pk

    @staticmethod
    def _column_value(field: Any, value: object, *, using: str) -> Any:
        """A cursor's value as its column compares it, else ValueError, TypeError or OverflowError: a timestamp is
        an ISO 8601 time with an offset and a UTC instant; text fits the column, without NUL or a lone surrogate
        (PostgreSQL and UTF-8 refuse them); an integer is within the column's range."""
        if isinstance(field, models.DateTimeField):
            if not isinstance(value, str):
                raise TypeError("a timestamp is a string")
            moment = dt.datetime.fromisoformat(value)
            if moment.utcoffset() is None:
                raise ValueError("a timestamp has an offset")
            return moment.astimezone(dt.UTC)  # OverflowError at the calendar's edges (0001-01-01T00:00+14:00)
        if isinstance(field, models.CharField | models.TextField):
            if not isinstance(value, str) or "\x00" in value or len(value) > (field.max_length or len(value)):
                raise ValueError("not text of this column")
            value.encode()  # UnicodeEncodeError (a ValueError) on a lone surrogate
            return value
        if isinstance(field, models.IntegerField):
            low, high = connections[using].ops.integer_field_range(field.get_internal_type())
            if type(value) is not int or not (low is None or low <= value) or not (high is None or value <= high):
                raise ValueError("not an integer of this column")
            return value
        raise TypeError(f"no cursor on a {type(field).__name__}")

    def get_paginated_response(self, data: Any) -> Response:
        url = None
        if self.next_cursor is not None:
            url = replace_query_param(self.request.build_absolute_uri(), "cursor", self.next_cursor)
        return Response({"next": url, "results": data})

    def get_paginated_response_schema(self, schema: dict[str, Any]) -> dict[str, Any]:
        return {"type": "object", "required": ["next", "results"], "properties": {
            "next": {"type": "string", "format": "uri", "nullable": True,
                     "description": "the next page's URL; null on the last page"},
            "results": schema}}

    def get_schema_operation_parameters(self, view: Any) -> list[dict[str, Any]]:
        return [
            {"name": "cursor", "in": "query", "required": False, "schema": {"type": "string"},
             "description": "where the page starts: take it from the previous page's `next`"},
            {"name": "limit", "in": "query", "required": False,
             "schema": {"type": "integer", "minimum": 1, "maximum": self.max_page_size},
             "description": f"rows per page (default {self.page_size})"},
        ]


def _pages_by(key: str) -> type[Pagination]:
    return type("Pagination", (Pagination,), {"key": key})


# --- launch specs ---------------------------------------------------------------------------------------


class LaunchSpecListView(APIView):
    schema = ApiSchema()

    @extend_schema(operation_id="launch_specs_list", responses=s.LaunchSpecListSerializer,
                   summary="Every launch spec, as `launchspec apply` documents (not paginated: specs are few)")
    def get(self, request: Request) -> Response:
        return Response({"launchSpecs": [launch_spec_to_ocean(spec) for spec in selectors.launch_spec_list()]})


# The PUT's answer: the spec's document, and what its selector did to the pool when it took or let go of EIPs.
PUT_RESULT = inline_serializer("LaunchSpecPutResult", fields={
    "launchSpec": s.LaunchSpecBodySerializer(),
    "poolChanges": serializers.ListField(
        child=serializers.CharField(), required=False,
        help_text="only when the new selector moved EIPs, as the sync's diff says them: \"+ pool takes IP "
                  "(allocation), now unmanaged\" for each EIP of the region it now selects, \"- pool lets go of IP "
                  "(allocation), now on node N\" for each it no longer selects (as the last pass saw them)"),
})


class LaunchSpecDetailView(APIView):
    schema = ApiSchema()

    @extend_schema(responses={200: s.LaunchSpecDocumentSerializer}, summary="One launch spec (the export)")
    def get(self, request: Request, name: str) -> Response:
        return Response(launch_spec_to_ocean(_spec_or_404(name)))

    @extend_schema(
        request=PolymorphicProxySerializer(
            component_name="LaunchSpecPut", resource_type_field_name=None,
            serializers=[s.LaunchSpecPutDocumentSerializer, s.LaunchSpecPutBodySerializer]),
        responses={200: PUT_RESULT, 201: PUT_RESULT, 400: PROBLEMS},
        summary="Create or update (idempotent apply, like `launchspec apply -f`)",
        description="201 when created, 200 when updated (or unchanged). The body's name must be the URL's "
                    "(absent, it is taken from the URL). The body is the export's `{\"launchSpec\": {...}}` document "
                    "or the bare spec. Invalid input: 400 with every problem, nothing changed. The answer is the "
                    "spec's document, with `poolChanges` when the selector took EIPs into the pool or let some go "
                    "(a `dryRun` sync says the same before anything changes).",
    )
    def put(self, request: Request, name: str) -> Response:
        exists = LaunchSpec.objects.filter(name=name).exists()
        require_permissions(request, "pools.change_launchspec" if exists else "pools.add_launchspec")
        try:
            data = _document(request)
        except SpecFileError as exc:
            return _problems("refused, nothing changed", exc.messages, 400)
        problems: list[str] = []
        body = data["launchSpec"] if isinstance(data, dict) and isinstance(data.get("launchSpec"), dict) else data
        if isinstance(body, dict):
            if "name" not in body:
                body = {**body, "name": name}
            elif body["name"] != name:
                problems.append(f"name {body['name']!r} in the body differs from {name!r} in the URL")
        try:
            spec_input = parse_launch_spec(body)
        except SpecFileError as exc:
            problems.extend(exc.messages)
        if problems:
            return _problems("refused, nothing changed", problems, 400)
        # Read before the write: the old selector is what the new one is compared with.
        pool_changes = services.pool_change_lines(spec_input, selectors.launch_spec_get(name=spec_input.name))
        try:
            spec, created = services.launch_spec_apply(data=spec_input, actor=request_actor(request))
        except SpecFileError as exc:
            return _problems("refused, nothing changed", exc.messages, 400)
        document: dict[str, Any] = launch_spec_to_ocean(_spec_or_404(spec.name))
        if pool_changes:
            document["poolChanges"] = pool_changes
        response = Response(document, status=201 if created else 200)
        if created:
            response["Location"] = reverse("api-launch-spec-detail", args=[spec.name])
        return response

    @extend_schema(responses={204: None, 404: s.ProblemsSerializer, 409: PROBLEMS},
                   summary="Delete a launch spec that holds no EIP (409 with the reason while it holds some)")
    def delete(self, request: Request, name: str) -> Response:
        require_permissions(request, "pools.delete_launchspec")
        try:
            services.launch_spec_delete(name=name, actor=request_actor(request))
        except LaunchSpec.DoesNotExist as exc:
            raise exceptions.NotFound(str(exc)) from None
        except SpecFileError as exc:
            return _problems("; ".join(exc.messages), exc.messages, 409)
        return Response(status=204)


class LaunchSpecPlanView(APIView):
    schema = ApiSchema()

    @extend_schema(responses=s.PlanSerializer,
                   summary="The plan of the spec's latest pass, as the spec page shows it, and when it was made")
    def get(self, request: Request, name: str) -> Response:
        spec = _spec_or_404(name)
        preview = selectors.plan_preview(spec=spec)
        return Response(s.PlanSerializer({"launchSpec": spec.name, "lines": preview.lines, "error": preview.error,
                                          "plannedAt": preview.planned_at}).data)


class LaunchSpecSyncView(APIView):
    schema = ApiSchema()

    @extend_schema(
        request=s.SyncRequestSerializer,
        responses={200: s.SyncResultSerializer, 400: OpenApiResponse(
            PolymorphicProxySerializer(component_name="SyncRefused", resource_type_field_name=None,
                                       serializers=[s.SyncResultSerializer, s.SyncRefusalSerializer]),
            description="refused, nothing changed: the result with every problem of the documents, or (a body "
                        "that is not JSON, not an object with launchSpecs, a bad flag, too many documents, no "
                        "document with prune) only `detail` and `problems`")},
        summary="Make the launch specs exactly these (`launchspec apply -f DIR/`), all or nothing",
        description="Any problem in any document: 400 with every problem, nothing changed. `dryRun` only says "
                    "what would change (readers may ask); applying needs the operators' launch-spec permissions, "
                    "and `prune` their delete permission too.",
    )
    def post(self, request: Request) -> Response:
        try:
            data = _document(request)
        except SpecFileError as exc:
            return _problems("refused, nothing changed", exc.messages, 400)
        if not isinstance(data, dict) or not isinstance(data.get("launchSpecs"), list):
            return _problems("refused, nothing changed",
                             ['expected a JSON object with "launchSpecs": [...] (and optionally prune, dryRun)'], 400)
        flags = {key: data.get(key, False) for key in ("prune", "dryRun")}
        problems = [f"{key} must be true or false" for key, value in flags.items() if not isinstance(value, bool)]
        cluster = data.get("cluster")
        if cluster is not None and (problem := cluster_name_problem(cluster)) is not None:
            problems.append(problem)
        elif cluster is not None and flags["prune"] is not True:
            problems.append("cluster sets the scope of prune: give prune too")
        unknown = sorted(set(data) - {"launchSpecs", "prune", "dryRun", "cluster"})
        problems += [f"unknown field {_short(key)}" for key in unknown]
        if len(data["launchSpecs"]) > services.SYNC_MAX_DOCUMENTS:
            problems.append(f"{len(data['launchSpecs'])} launch specs in one sync: at most "
                            f"{services.SYNC_MAX_DOCUMENTS}; nothing changed")
        if problems:
            return _problems("refused, nothing changed", problems, 400)
        if not flags["dryRun"]:
            require_permissions(request, *SPEC_WRITE, *(("pools.delete_launchspec",) if flags["prune"] else ()))
        documents = [(_source(index, document), document) for index, document in enumerate(data["launchSpecs"])]
        result = services.launch_spec_sync(documents=documents, prune=flags["prune"], dry_run=flags["dryRun"],
                                           actor=request_actor(request), cluster=cluster)
        body = dataclasses.asdict(result) | {"changed": result.changed}
        body["pruneClusters"] = body.pop("prune_clusters")
        if result.problems:
            return Response({"detail": "refused, nothing changed", **body}, status=400)
        return Response(body)


def _source(index: int, document: object) -> str:
    """A document's label in problem texts: its place in the list, and its name when it is a valid one (a name
    with control, bidi or surrogate characters is never echoed: its own problem says what is wrong)."""
    inner = document.get("launchSpec") if isinstance(document, dict) else None
    name = (inner if isinstance(inner, dict) else document if isinstance(document, dict) else {}).get("name")
    shown = isinstance(name, str) and name and len(name) <= NAME_MAX and control_problem("name", name) is None
    return f"launchSpecs[{index}] ({name})" if shown else f"launchSpecs[{index}]"


def _short(value: object) -> str:
    """Unsafe text shown escaped (repr escapes controls, bidi marks and lone surrogates), and cut short."""
    text = ascii(value)
    return text if len(text) <= 60 else text[:59] + "…"


# --- EIPs, nodes, events ------------------------------------------------------------------------------


def _filtered_spec(form: Any) -> LaunchSpec | None:
    name = form.cleaned_data.get("spec") or ""
    if not name:
        return None
    spec = selectors.launch_spec_get(name=name)
    if spec is None:
        raise exceptions.ValidationError({"detail": "bad filter", "problems": [f"spec: no launch spec named {name!r}"]})
    return spec


def _valid(form: Any) -> Any:
    if not form.is_valid():
        raise exceptions.ValidationError({"detail": "bad filter", "problems": _form_problems(form)})
    return form


SPEC_Q = OpenApiParameter("spec", str, description="a launch spec's name")
SEARCH_Q = OpenApiParameter("q", str, description="text anywhere in the row, case-insensitively (as the page's search)")


class EipListView(ListAPIView):
    schema = ApiSchema()

    serializer_class = s.ElasticIpSerializer
    pagination_class = _pages_by("allocation_id")

    @extend_schema(summary="The EIPs, as the inventory page filters them (by allocation id)", parameters=[
        SPEC_Q, SEARCH_Q, OpenApiParameter("state", str, enum=[*selectors.EIP_STATES, selectors.UNMANAGED],
                                           description="unmanaged: the region's EIPs that no pool selects")])
    def get(self, request: Request, *args: Any, **kwargs: Any) -> Response:
        return super().get(request, *args, **kwargs)

    def get_queryset(self) -> QuerySet[Any]:
        form = _valid(EipFilterForm(self.request.query_params))
        q, state, spec = form.cleaned_data.get("q") or "", form.cleaned_data.get("state") or "", _filtered_spec(form)
        if state == selectors.UNMANAGED:
            # As the page: none of them belongs to a spec, so a spec filter leaves nothing.
            unmanaged = selectors.unmanaged_list(q=q)
            return unmanaged.none() if spec is not None else unmanaged
        return selectors.eip_list(q=q, spec=spec, state=state)


class EipDetailView(APIView):
    schema = ApiSchema()

    @extend_schema(responses=s.ElasticIpSerializer, summary="One EIP")
    def get(self, request: Request, allocation_id: str) -> Response:
        eip = selectors.eip_get(allocation_id=allocation_id)
        if eip is None:
            raise exceptions.NotFound(f"no Elastic IP {allocation_id!r}")
        return Response(s.ElasticIpSerializer(eip).data)


class NodeListView(ListAPIView):
    schema = ApiSchema()

    serializer_class = s.NodeSerializer
    pagination_class = _pages_by("name")

    @extend_schema(summary="The nodes, as the nodes page filters them (ended nodes only when ?state= asks)",
                   parameters=[SPEC_Q, SEARCH_Q, OpenApiParameter("state", str, enum=list(selectors.NODE_STATES))])
    def get(self, request: Request, *args: Any, **kwargs: Any) -> Response:
        return super().get(request, *args, **kwargs)

    def get_queryset(self) -> QuerySet[Any]:
        form = _valid(NodeFilterForm(self.request.query_params))
        return selectors.node_list(q=form.cleaned_data.get("q") or "", spec=_filtered_spec(form),
                                   state=form.cleaned_data.get("state") or "", hide_ended=True)

    def list(self, request: Request, *args: Any, **kwargs: Any) -> Response:
        page = self.paginate_queryset(self.filter_queryset(self.get_queryset()))
        assert page is not None  # the list always pages
        # Every row's waitingReason at once: a few queries per launch spec on the page, none per node.
        context = {**self.get_serializer_context(), "reasons": selectors.node_reasons(page)}
        return self.get_paginated_response(s.NodeSerializer(page, many=True, context=context).data)


class EventListView(ListAPIView):
    schema = ApiSchema()

    serializer_class = s.EventSerializer
    pagination_class = _pages_by("-timestamp")

    @extend_schema(summary="The history, newest first, with the history export's filters", parameters=[
        OpenApiParameter("since", OpenApiTypes.DATETIME, description="from this time on (ISO 8601; UTC if naive)"),
        OpenApiParameter("until", OpenApiTypes.DATETIME, description="before this time"),
        OpenApiParameter("spec", str, description="a launch spec's name (deleted specs' history too)"),
        OpenApiParameter("event", str, description="an event kind, e.g. assigned, released, reassigned"),
        SEARCH_Q,
        OpenApiParameter("node", str, description="one node's events: its exact name (a node object's `events`)"),
        OpenApiParameter("cluster", str, description="one cluster's events (with `node`: that cluster's node)"),
    ])
    def get(self, request: Request, *args: Any, **kwargs: Any) -> Response:
        return super().get(request, *args, **kwargs)

    def get_queryset(self) -> QuerySet[Any]:
        form = NodeEventFilterForm(self.request.query_params)
        if not form.is_valid():
            # The history export's refusal, word for word.
            detail = "bad filter: " + "; ".join(f"{k}: {' '.join(str(e) for e in v)}" for k, v in form.errors.items())
            raise exceptions.ValidationError({"detail": detail, "problems": _form_problems(form)})
        return selectors.event_list_where(filters=form.filters(), node=form.cleaned_data.get("node") or "",
                                          cluster=form.cleaned_data.get("cluster") or "")


# --- manual reassign -----------------------------------------------------------------------------------


class ReassignView(APIView):
    schema = ApiSchema()

    @extend_schema(
        request=s.ReassignBodySerializer,
        responses={202: s.ReassignStatusSerializer, 400: PROBLEMS, 404: s.ProblemsSerializer, 409: PROBLEMS},
        summary="Move the EIP to another node of its spec, on a worker (as the EIP page's Reassign)",
        description="202 with `status`, the URL to poll until `finished`. A refusal known now (the EIP gone, or in "
                    "conflict) is a 409; the worker's own refusals end the request as `refused` with the reason.",
    )
    def post(self, request: Request, allocation_id: str) -> Response:
        require_permissions(request, "pools.reassign_elasticip")
        eip = selectors.eip_get(allocation_id=allocation_id)
        if eip is None:
            raise exceptions.NotFound(f"no Elastic IP {allocation_id!r}")
        try:
            body = _document(request)
        except SpecFileError as exc:
            return _problems("refused, nothing changed", exc.messages, 400)
        node = body.get("node") if isinstance(body, dict) else None
        if (problem := node_name_problem(node)) is not None:
            return _problems("Choose a target node.", [f"node: {problem}"], 400)
        # The dashboard's up-front refusals, in its words; then its own submit (the enqueue on commit).
        if (error := services.reassign_refusal(eip=eip, state=selectors.eip_state(eip))) is not None:
            return _problems(error, [error], 409)
        reassign = services.reassign_request_submit(eip=eip, node_name=str(node), actor=request_actor(request))
        data = s.ReassignStatusSerializer(reassign, context={"request": request}).data
        return Response(data, status=status.HTTP_202_ACCEPTED, headers={"Location": data["status"]})


class ReassignStatusView(APIView):
    schema = ApiSchema()

    @extend_schema(responses={200: s.ReassignStatusSerializer, 404: s.ProblemsSerializer},
                   summary="Where a reassign request stands: pending, running, done, refused or failed")
    def get(self, request: Request, allocation_id: str, request_id: int) -> Response:
        require_permissions(request, "pools.reassign_elasticip")
        reassign = selectors.reassign_request_get(allocation_id=allocation_id, request_id=request_id)
        if reassign is None:
            raise exceptions.NotFound(f"no reassign request {request_id} for {allocation_id!r}")
        return Response(s.ReassignStatusSerializer(reassign, context={"request": request}).data)
