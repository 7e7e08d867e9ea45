"""The API's JSON shapes. Launch specs are Spot Ocean documents made by `pools.specfile` (the one reader
and writer of that shape); these serializers render the other rows and describe every shape in the schema."""

from __future__ import annotations

from typing import Any
from urllib.parse import urlencode

from django.urls import reverse
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import extend_schema_field
from rest_framework import serializers

from pools import selectors
from pools.models import ElasticIP, Event, Node, ReassignRequest, UnmanagedAddress
from pools.services import SYNC_MAX_DOCUMENTS
from pools.specfile import MIN_FREE_MAX

# --- launch specs (described for the schema; validated by pools.specfile.parse_launch_spec) ---------------


class LabelSerializer(serializers.Serializer):
    key = serializers.CharField()
    value = serializers.CharField(allow_blank=True)


class TagSelectorSerializer(serializers.Serializer):
    tagKey = serializers.CharField()
    tagValue = serializers.CharField(required=False, help_text="absent: every EIP that carries tagKey")


class ElasticIpPoolSerializer(serializers.Serializer):
    tagSelector = TagSelectorSerializer()
    minFree = serializers.IntegerField(
        required=False, default=0, min_value=0, max_value=MIN_FREE_MAX,
        help_text="eipdash extension: the free EIPs to keep as headroom; fewer raises the pool_low alert (0: none)",
    )


class LaunchSpecBodySerializer(serializers.Serializer):
    name = serializers.CharField()
    labels = LabelSerializer(many=True)
    elasticIpPool = ElasticIpPoolSerializer()
    region = serializers.CharField(required=False, help_text="the cluster's region; absent: the cluster's")
    cluster = serializers.CharField(required=False, help_text="a configured cluster; absent: the default one")
    enabled = serializers.BooleanField(required=False, default=True)


class LaunchSpecDocumentSerializer(serializers.Serializer):
    """`{"launchSpec": {...}}`: what `manage.py launchspec apply -f` reads and the export writes."""

    launchSpec = LaunchSpecBodySerializer()


class LaunchSpecListSerializer(serializers.Serializer):
    launchSpecs = LaunchSpecDocumentSerializer(many=True)


class LaunchSpecPutBodySerializer(serializers.Serializer):
    """A bare launch spec: the body's name is optional (the URL's); given, it must be the URL's."""

    name = serializers.CharField(required=False, help_text="optional: the URL's; given, it must be the URL's")
    labels = LabelSerializer(many=True)
    elasticIpPool = ElasticIpPoolSerializer()
    region = serializers.CharField(required=False, help_text="the cluster's region; absent: the cluster's")
    cluster = serializers.CharField(required=False, help_text="a configured cluster; absent: the default one")
    enabled = serializers.BooleanField(required=False, default=True)


class LaunchSpecPutDocumentSerializer(serializers.Serializer):
    """`{"launchSpec": {...}}`, the export's shape, with the name optional."""

    launchSpec = LaunchSpecPutBodySerializer()


class SyncRequestSerializer(serializers.Serializer):
    launchSpecs = LaunchSpecDocumentSerializer(
        many=True, help_text="every spec that should exist: `{\"launchSpec\": {...}}` documents (bare specs are "
                             f"accepted too); at most {SYNC_MAX_DOCUMENTS}")
    prune = serializers.BooleanField(
        required=False, default=False,
        help_text="disable the specs absent from launchSpecs that still hold EIPs or have nodes waiting under the "
                  "startup taint; delete the others. Only in the clusters the documents name, or in `cluster`. "
                  "Refused without any document.")
    dryRun = serializers.BooleanField(required=False, default=False, help_text="say what would change; change nothing")
    cluster = serializers.CharField(required=False,
                                    help_text="prune only this configured cluster's specs (default: the clusters "
                                              "the documents name); an unknown cluster is refused")


class SyncResultSerializer(serializers.Serializer):
    created = serializers.ListField(child=serializers.CharField())
    updated = serializers.ListField(child=serializers.CharField())
    unchanged = serializers.ListField(child=serializers.CharField())
    disabled = serializers.ListField(child=serializers.CharField(),
                                     help_text="prune: absent, still holding EIPs or tainted waiting nodes: disabled")
    deleted = serializers.ListField(child=serializers.CharField())
    draining = serializers.ListField(child=serializers.CharField(),
                                     help_text="prune: absent, disabled already, still holding EIPs or tainted "
                                               "waiting nodes (deleted by a later prune)")
    pruneClusters = serializers.ListField(child=serializers.CharField(),
                                          help_text="prune: the clusters whose specs it looked at")
    diff = serializers.ListField(child=serializers.CharField())
    problems = serializers.ListField(child=serializers.CharField(),
                                     help_text="a busy spec or a refusal under the locks lists only the problem: "
                                               "the name lists are then empty")
    applied = serializers.BooleanField(
        help_text="true when the record now matches the documents: this call committed the changes, or there "
                  "were none to make; false for a dry run and when refused (nothing changed)")
    changed = serializers.BooleanField(help_text="something was (or, in a dry run, would be) created, updated, "
                                                 "disabled or deleted")
    detail = serializers.CharField(required=False, help_text="on a 400: \"refused, nothing changed\"")


class SyncRefusalSerializer(serializers.Serializer):
    """The early refusal, before any document is looked at (not JSON, not an object, a bad flag, too many)."""

    detail = serializers.CharField()
    problems = serializers.ListField(child=serializers.CharField())


class ProblemsSerializer(serializers.Serializer):
    detail = serializers.CharField()
    problems = serializers.ListField(child=serializers.CharField(), required=False)


class PlanSerializer(serializers.Serializer):
    launchSpec = serializers.CharField()
    lines = serializers.ListField(child=serializers.CharField(),
                                  help_text="the steps the spec's latest pass planned, as the spec page shows them; "
                                            "empty while no pass has planned the spec (plannedAt null)")
    error = serializers.CharField(allow_blank=True)
    plannedAt = serializers.DateTimeField(allow_null=True,
                                          help_text="when that pass planned (its clock); null: no pass has planned "
                                                    "the spec yet")


# --- rows ------------------------------------------------------------------------------------------------


class ElasticIpSerializer(serializers.ModelSerializer):
    allocationId = serializers.CharField(source="allocation_id")
    publicIp = serializers.CharField(source="public_ip")
    state = serializers.SerializerMethodField(
        help_text="free, assigned, conflict or gone (as the inventory page); unmanaged: in no pool")
    gone = serializers.BooleanField(default=False, help_text="no longer in AWS or in the pool")
    node = serializers.CharField(source="current_node", allow_null=True, default=None)
    instanceId = serializers.CharField(source="current_instance", allow_null=True, default=None)
    launchSpec = serializers.CharField(source="current_spec", allow_null=True, default=None)
    since = serializers.DateTimeField(source="current_since", allow_null=True, default=None)
    associationId = serializers.CharField(source="association_id")
    lastSeenAt = serializers.DateTimeField(source="last_seen_at", allow_null=True)

    class Meta:
        model = ElasticIP
        fields = ["allocationId", "publicIp", "region", "state", "node", "instanceId", "launchSpec", "since",
                  "associationId", "tags", "gone", "lastSeenAt"]

    @extend_schema_field(serializers.ChoiceField(choices=[*selectors.EIP_STATES, selectors.UNMANAGED]))
    def get_state(self, eip: ElasticIP | UnmanagedAddress) -> str:
        return selectors.eip_state(eip)


class NodeSerializer(serializers.ModelSerializer):
    cluster = serializers.CharField(source="cluster.name")
    launchSpec = serializers.CharField(source="launch_spec.name", allow_null=True, default=None)
    instanceId = serializers.CharField(source="instance_id")
    instanceState = serializers.CharField(source="instance_state")
    privateIp = serializers.CharField(source="private_ip")
    publicIp = serializers.CharField(source="current_ip", allow_null=True, default=None)
    allocationId = serializers.CharField(source="current_allocation", allow_null=True, default=None)
    startupTainted = serializers.BooleanField(source="startup_tainted")
    drainReason = serializers.CharField(source="drain_reason")
    workloadPods = serializers.IntegerField(source="workload_pods", allow_null=True)
    firstSeenAt = serializers.DateTimeField(source="first_seen_at")
    lastSeenAt = serializers.DateTimeField(source="last_seen_at")
    eipReadyAt = serializers.DateTimeField(source="eip_ready_at", allow_null=True)
    deletedAt = serializers.DateTimeField(source="deleted_at", allow_null=True)
    waitingReason = serializers.SerializerMethodField(
        help_text="why the node holds no EIP it should hold, or keeps a startup taint nothing lifts, in the words "
                  "at the top of its page (\"waiting: the pool of egress-web has 0 free of 4 (since 02:06:15, 3 "
                  "min)\"); empty when it does not wait")
    events = serializers.SerializerMethodField(help_text="its history: /api/v1/events/?node=…&cluster=…")
    page = serializers.SerializerMethodField(help_text="its dashboard page")

    class Meta:
        model = Node
        fields = ["name", "cluster", "launchSpec", "state", "instanceId", "instanceState", "az", "privateIp",
                  "publicIp", "allocationId", "startupTainted", "draining", "drainReason", "workloadPods",
                  "firstSeenAt", "lastSeenAt", "eipReadyAt", "deletedAt", "waitingReason", "events", "page"]

    def get_waitingReason(self, node: Node) -> str:
        # The list view decides every row's reason at once (pools.selectors.node_reasons): no query per node.
        reasons = self.context.get("reasons")
        if reasons is None:
            reasons = selectors.node_reasons([node])
        reason = reasons.get(node.pk)
        return reason.text if reason is not None and reason.waiting else ""

    @extend_schema_field(OpenApiTypes.URI)
    def get_events(self, node: Node) -> str:
        query = urlencode({"node": node.name, "cluster": node.cluster.name})
        return _absolute(self.context.get("request"), f"{reverse('api-event-list')}?{query}")

    @extend_schema_field(OpenApiTypes.URI)
    def get_page(self, node: Node) -> str:
        return _absolute(self.context.get("request"), reverse("node-detail", args=[node.cluster.name, node.name]))


def _absolute(request: Any, path: str) -> str:
    return str(request.build_absolute_uri(path)) if request is not None else path


class EventSerializer(serializers.ModelSerializer):
    event = serializers.CharField(source="kind")
    launchSpec = serializers.CharField(source="launch_spec")
    instanceId = serializers.CharField(source="instance_id")
    publicIp = serializers.CharField(source="public_ip")
    allocationId = serializers.CharField(source="allocation_id")

    class Meta:
        model = Event
        fields = ["id", "timestamp", "event", "launchSpec", "cluster", "region", "node", "instanceId", "publicIp",
                  "allocationId", "actor", "reason"]


class ReassignBodySerializer(serializers.Serializer):
    node = serializers.CharField(max_length=253, help_text="the target node's name")


class ReassignStatusSerializer(serializers.ModelSerializer):
    allocationId = serializers.CharField(source="eip.allocation_id")
    publicIp = serializers.CharField(source="eip.public_ip")
    node = serializers.CharField(source="node_name")
    finished = serializers.BooleanField(source="is_finished")
    createdAt = serializers.DateTimeField(source="created_at")
    startedAt = serializers.DateTimeField(source="started_at", allow_null=True)
    finishedAt = serializers.DateTimeField(source="finished_at", allow_null=True)
    status = serializers.SerializerMethodField()

    class Meta:
        model = ReassignRequest
        fields = ["id", "allocationId", "publicIp", "node", "actor", "state", "finished", "message", "createdAt",
                  "startedAt", "finishedAt", "status"]

    def get_status(self, reassign: ReassignRequest) -> str:
        from django.urls import reverse

        request: Any = self.context.get("request")
        path = reverse("api-reassign-status", args=[reassign.eip.allocation_id, reassign.pk])
        return str(request.build_absolute_uri(path)) if request is not None else path
