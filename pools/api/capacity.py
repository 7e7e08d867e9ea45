"""A launch spec's capacity and its allowlist over the API: GET …/capacity and GET …/egress-ips. Thin, like the
other views: the report comes from pools/selectors_capacity.py, the allowlist from pools/selectors_egress.py
(the spec page shows the same two)."""

from __future__ import annotations

from typing import Any

from django.http import HttpResponse
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import OpenApiParameter, OpenApiResponse, extend_schema
from rest_framework import serializers
from rest_framework.negotiation import BaseContentNegotiation
from rest_framework.renderers import BaseRenderer
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from pools import allowlist
from pools.selectors_capacity import capacity_report
from pools.selectors_egress import allowlist_of

from .serializers import ProblemsSerializer
from .views import ApiSchema, _problems, _short, _spec_or_404

# --- shapes (the schema's; the views answer with the selectors' own dicts) --------------------------------


class QuotaSerializer(serializers.Serializer):
    limit = serializers.IntegerField(allow_null=True, help_text="the account's EIP quota in the region; null: unknown")
    allocated = serializers.IntegerField(help_text="EIPs allocated in the region (pool and unmanaged), as last read")
    available = serializers.IntegerField(allow_null=True, help_text="limit - allocated; null when either is unknown")


class CostSerializer(serializers.Serializer):
    hourlyUsd = serializers.FloatField(help_text="what the pool's addresses cost per hour (BYOIP ones nothing)")
    monthUsd = serializers.FloatField(help_text="the same over a month of 730 hours")
    idleMonthUsd = serializers.FloatField(help_text="what they cost over the last 30 days while no node held them")
    byoip = serializers.IntegerField(help_text="addresses brought to AWS (BYOIP), not billed by the hour")


class EgressCountsSerializer(serializers.Serializer):
    nodes = serializers.IntegerField(help_text="the spec's live nodes (those of a subnet not read yet count only here)")
    viaInternetGateway = serializers.IntegerField(help_text="whose traffic leaves by an internet gateway: their EIP")
    viaNat = serializers.IntegerField(help_text="whose traffic leaves by a NAT gateway: not their EIP")
    noRoute = serializers.IntegerField(help_text="whose subnet has no route out")


class CapacitySerializer(serializers.Serializer):
    pool = serializers.IntegerField(help_text="EIPs in the pool")
    inUse = serializers.IntegerField(help_text="on a node, or associated in AWS without a claim (a conflict)")
    free = serializers.IntegerField(help_text="ready for a node")
    minFree = serializers.IntegerField(help_text="the spec's headroom: fewer free raises pool_low")
    peak7d = serializers.IntegerField(help_text="the most of the spec's nodes that held or waited for an EIP at one "
                                                "moment of the last 7 days")
    peak30d = serializers.IntegerField(help_text="the same over the last 30 days")
    shortfall = serializers.IntegerField(help_text="how far the 30-day peak is above the pool now (0: enough)")
    quota = QuotaSerializer()
    cost = CostSerializer()
    egress = EgressCountsSerializer()


class EgressAddressSerializer(serializers.Serializer):
    publicIp = serializers.IPAddressField(protocol="IPv4")
    allocationId = serializers.CharField()
    state = serializers.ChoiceField(choices=[allowlist.IN_USE, allowlist.FREE],
                                    help_text="in-use: on a node or associated in AWS; free: ready for one")


class EgressIpsSerializer(serializers.Serializer):
    launchSpec = serializers.CharField()
    addresses = EgressAddressSerializer(many=True, help_text="in numeric IP order")
    updatedAt = serializers.DateTimeField(allow_null=True, help_text="the newest reading of these EIPs; null: none")


# --- views ---------------------------------------------------------------------------------------------


class LaunchSpecCapacityView(APIView):
    schema = ApiSchema()

    @extend_schema(operation_id="launch_specs_capacity", responses=CapacitySerializer,
                   summary="The pool's capacity: use, peaks, shortfall, quota, cost and egress (as the spec page)")
    def get(self, request: Request, name: str) -> Response:
        return Response(capacity_report(_spec_or_404(name)).as_api())


class FirstRenderer(BaseContentNegotiation):
    """Always the view's JSON renderer. `?format=` is the egress-ips view's own parameter: DRF would read it as a
    renderer's name and answer `txt` with a 404 before the view ran."""

    def select_parser(self, request: Request, parsers: Any) -> Any:
        return parsers[0] if parsers else None

    def select_renderer(self, request: Request, renderers: list[BaseRenderer],
                        format_suffix: str | None = None) -> tuple[BaseRenderer, str]:
        return renderers[0], str(renderers[0].media_type)


ETAG = OpenApiParameter("ETag", str, OpenApiParameter.HEADER, response=[200, 304],
                        description="a weak validator of the list (not of updatedAt): send it back in If-None-Match")


class LaunchSpecEgressIpsView(APIView):
    schema = ApiSchema()
    content_negotiation_class = FirstRenderer

    @extend_schema(
        operation_id="launch_specs_egress_ips",
        summary="The pool's public IPs, for partners' allowlists (in use or free, in numeric order)",
        description="Every EIP of the spec's pool that AWS still lists. `?format=txt`: one IP a line. Poll with "
                    "If-None-Match: the answer is 304 until the list changes (for JSON, a state too); updatedAt "
                    "alone never changes the ETag.",
        parameters=[
            OpenApiParameter("format", str, enum=list(allowlist.FORMATS), description="json (default) or txt"),
            OpenApiParameter("If-None-Match", str, OpenApiParameter.HEADER,
                             description="an ETag of an earlier answer (W/ or not, a list, or *)"),
            ETAG,
        ],
        responses={
            (200, "application/json"): EgressIpsSerializer,
            (200, "text/plain"): OpenApiResponse(OpenApiTypes.STR, description="`?format=txt`: one IP a line"),
            304: OpenApiResponse(description="not modified: If-None-Match holds the current ETag"),
            400: OpenApiResponse(ProblemsSerializer, description="a format other than json or txt"),
        },
    )
    def get(self, request: Request, name: str) -> Response | HttpResponse:
        fmt = request.query_params.get("format", "json")
        if fmt not in allowlist.FORMATS:
            return _problems("bad format", [f"format: json or txt, not {_short(fmt)}"], 400)
        current = allowlist_of(_spec_or_404(name))
        # Weak, and blind to updatedAt, which every pass moves (Allowlist.etag says why): a sync job polling
        # with If-None-Match gets 304 until the list itself changes.
        etag = current.etag(fmt)
        # A private answer that any cache must check again before reuse: the list is the account's, and the
        # 304 makes checking cheap.
        headers = {"ETag": etag, "Cache-Control": "private, no-cache"}
        if allowlist.etag_matches(request.headers.get("If-None-Match", ""), etag):
            return Response(status=304, headers=headers)
        if fmt == "txt":
            return HttpResponse(current.text(), content_type="text/plain; charset=utf-8", headers=headers)
        return Response(current.as_api(), headers=headers)
