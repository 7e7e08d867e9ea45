"""The EC2 adapter against the moto server (through boto3's standard endpoint resolution)."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import botocore.exceptions
import pytest

from sandbox.ec2_emulator import Ec2World
from tests.fixtures.ec2 import CannedServer, ErrorServer
from workers import ec2 as ec2_module
from workers.ec2 import (
    Address,
    AlreadyAssociated,
    Ec2,
    Instance,
    NotFound,
    Permanent,
    Throttled,
    Transient,
    error_class_for,
    to_domain_error,
)

REGION = "us-east-1"


class RequestCounter:
    """Counts the HTTP requests the shared client sends, per operation (retries included)."""

    def __init__(self) -> None:
        self.by_operation: dict[str, int] = {}

    def __call__(self, event_name: str, **_: Any) -> None:
        operation = event_name.rsplit(".", 1)[-1]  # before-send.ec2.<Operation>
        self.by_operation[operation] = self.by_operation.get(operation, 0) + 1


@pytest.fixture
def ec2(ec2_emulator: Any) -> Ec2:
    return Ec2(REGION)


@pytest.fixture
def requests_sent(ec2: Ec2) -> Iterator[RequestCounter]:
    counter = RequestCounter()
    # The client is shared by the whole process: unregister so other tests are not counted.
    ec2.client.meta.events.register("before-send.ec2", counter, unique_id="test-request-counter")
    try:
        yield counter
    finally:
        ec2.client.meta.events.unregister("before-send.ec2", unique_id="test-request-counter")


# --- DescribeAddresses ---------------------------------------------------------------------------


def test_list_all_addresses_keeps_eips_with_extra_tags_in_one_call(
    ec2: Ec2, ec2_world: Ec2World, requests_sent: RequestCounter
) -> None:
    pool_a, _ = ec2_world.allocate_eip({"pool-a": "web"})
    pool_b, _ = ec2_world.allocate_eip({"pool-b": ""})
    # An extra tag must not hide it (moto's multi-value tag-key filter would).
    other_value, _ = ec2_world.allocate_eip({"pool-a": "batch", "team": "x"})
    unrelated, _ = ec2_world.allocate_eip({"unrelated": "1"})

    addresses = {a.allocation_id: a for a in ec2.list_all_addresses()}

    assert set(addresses) == {pool_a, pool_b, other_value, unrelated}
    assert addresses[other_value].tags == {"pool-a": "batch", "team": "x"}
    assert requests_sent.by_operation == {"DescribeAddresses": 1}


def test_list_all_addresses_includes_non_pool_eips(
    ec2: Ec2, ec2_world: Ec2World, requests_sent: RequestCounter
) -> None:
    _, eni_id, private_ip = ec2_world.launch_instance()
    pool, _ = ec2_world.allocate_eip({"pool": "web"})
    foreign, _ = ec2_world.allocate_eip({"Name": "nat"})
    untagged, _ = ec2_world.allocate_eip({})
    ec2.associate(allocation_id=foreign, eni_id=eni_id, private_ip=private_ip)
    requests_sent.by_operation.clear()

    addresses = {a.allocation_id: a for a in ec2.list_all_addresses()}

    assert set(addresses) == {pool, foreign, untagged}
    assert addresses[foreign].eni_id == eni_id
    assert requests_sent.by_operation == {"DescribeAddresses": 1}


def test_list_addresses_reports_the_association(ec2: Ec2, ec2_world: Ec2World) -> None:
    _, eni_id, private_ip = ec2_world.launch_instance()
    allocation_id, public_ip = ec2_world.allocate_eip({"pool": "web"})
    association_id = ec2.associate(allocation_id=allocation_id, eni_id=eni_id, private_ip=private_ip)

    [address] = ec2.list_all_addresses()

    assert address.public_ip == public_ip
    assert address.association_id == association_id
    assert (address.eni_id, address.private_ip) == (eni_id, private_ip)
    assert address.tags == {"pool": "web"}


def test_list_all_addresses_parses_an_unchanged_answer_once_and_still_sees_every_change(
    ec2: Ec2, ec2_world: Ec2World, requests_sent: RequestCounter
) -> None:
    """An answer equal to the last one but for its request id is not parsed again (the same Address objects come
    back, from a new call each time); a tag, an association made outside eipdash, an allocation and a release
    each show in the very next call."""
    _, eni_id, private_ip = ec2_world.launch_instance()
    pool, _ = ec2_world.allocate_eip({"pool": "web"})
    first = ec2.list_all_addresses()
    again = ec2.list_all_addresses()
    assert requests_sent.by_operation == {"DescribeAddresses": 2}
    assert again == first and again is not first and again[0] is first[0]

    ec2_world.client.create_tags(Resources=[pool], Tags=[{"Key": "team", "Value": "edge"}])
    (tagged,) = ec2.list_all_addresses()
    assert tagged.tags == {"pool": "web", "team": "edge"}
    ec2_world.client.associate_address(AllocationId=pool, NetworkInterfaceId=eni_id, PrivateIpAddress=private_ip)
    (associated,) = ec2.list_all_addresses()
    assert (associated.eni_id, associated.private_ip) == (eni_id, private_ip)
    other, _ = ec2_world.allocate_eip({})
    assert {a.allocation_id for a in ec2.list_all_addresses()} == {pool, other}
    ec2_world.client.release_address(AllocationId=other)
    assert [a.allocation_id for a in ec2.list_all_addresses()] == [pool]
    # Each answer keeps its own metadata (botocore writes its retries into it).
    raw = ec2.client.describe_addresses()
    assert raw["ResponseMetadata"]["HTTPStatusCode"] == 200 and raw["ResponseMetadata"]["RequestId"]


# --- DescribeInstances ---------------------------------------------------------------------------


def test_primary_eni_of_a_multi_eni_instance(ec2: Ec2, ec2_world: Ec2World) -> None:
    instance_id, primary_eni, private_ip = ec2_world.launch_instance(extra_enis=2)
    attached = ec2_world.client.describe_network_interfaces(
        Filters=[{"Name": "attachment.instance-id", "Values": [instance_id]}]
    )["NetworkInterfaces"]
    assert len(attached) == 3  # the node really has several ENIs

    instance = ec2.describe_instances([instance_id])[instance_id]

    assert instance.eni_id == primary_eni
    assert instance.private_ip == private_ip
    assert instance.state == "running"
    assert instance.az == "us-east-1a"


def test_primary_eni_is_found_by_device_index_not_position() -> None:
    raw = {
        "InstanceId": "i-0aaa",
        "State": {"Name": "running"},
        "Placement": {"AvailabilityZone": "us-east-1b"},
        "NetworkInterfaces": [
            {
                "NetworkInterfaceId": "eni-secondary",
                "PrivateIpAddress": "10.0.0.9",
                "Attachment": {"DeviceIndex": 1},
            },
            {
                "NetworkInterfaceId": "eni-primary",
                "PrivateIpAddress": "10.0.0.5",
                "PrivateIpAddresses": [
                    {"PrivateIpAddress": "10.0.0.7", "Primary": False},
                    {"PrivateIpAddress": "10.0.0.5", "Primary": True},
                ],
                "Attachment": {"DeviceIndex": 0},
            },
        ],
    }
    assert Instance.from_aws(raw) == Instance("i-0aaa", "running", "us-east-1b", "eni-primary", "10.0.0.5")


def test_unknown_instance_ids_are_absent_not_fatal(ec2: Ec2, ec2_world: Ec2World) -> None:
    instance_id, _, _ = ec2_world.launch_instance()

    found = ec2.describe_instances(["i-0123456789abcdef0", instance_id, "i-0fedcba9876543210"])

    assert set(found) == {instance_id}


def test_describe_instances_batches_the_filter_values(
    ec2: Ec2, ec2_world: Ec2World, requests_sent: RequestCounter
) -> None:
    real = [ec2_world.launch_instance(az=az)[0] for az in ("us-east-1a", "us-east-1b", "us-east-1c")]
    unknown = [f"i-{n:017x}" for n in range(ec2_module.FILTER_VALUES_LIMIT * 2)]
    requests_sent.by_operation.clear()

    found = ec2.describe_instances(unknown + real)

    assert set(found) == set(real)
    # 403 distinct ids at 200 per call: three calls, each under AWS's FilterLimitExceeded bound.
    assert requests_sent.by_operation == {"DescribeInstances": 3}


def test_describe_instances_follows_pages(
    ec2: Ec2, ec2_world: Ec2World, requests_sent: RequestCounter, monkeypatch: pytest.MonkeyPatch
) -> None:
    # moto pages by reservation: one run_instances call each gives several pages at the smallest size.
    ids = [ec2_world.launch_instance()[0] for _ in range(7)]
    monkeypatch.setattr(ec2_module, "INSTANCES_PAGE_SIZE", 5)
    requests_sent.by_operation.clear()

    found = ec2.describe_instances(ids)

    assert set(found) == set(ids)
    assert requests_sent.by_operation == {"DescribeInstances": 2}


def test_describe_no_instances_asks_nothing(ec2: Ec2, requests_sent: RequestCounter) -> None:
    assert ec2.describe_instances([]) == {}
    assert requests_sent.by_operation == {}


def test_terminated_instance_state(ec2: Ec2, ec2_world: Ec2World) -> None:
    instance_id, _, _ = ec2_world.launch_instance()
    ec2_world.terminate(instance_id)

    assert ec2.describe_instances([instance_id])[instance_id].state == "terminated"


# --- AssociateAddress / DisassociateAddress ------------------------------------------------------


def test_associate_by_eni_on_a_multi_eni_node(ec2: Ec2, ec2_world: Ec2World) -> None:
    instance_id, eni_id, private_ip = ec2_world.launch_instance(extra_enis=1)
    allocation_id, _ = ec2_world.allocate_eip({"pool": "web"})

    association_id = ec2.associate(allocation_id=allocation_id, eni_id=eni_id, private_ip=private_ip)

    raw = ec2_world.address(allocation_id)
    assert raw["AssociationId"] == association_id
    assert (raw["NetworkInterfaceId"], raw["PrivateIpAddress"]) == (eni_id, private_ip)
    assert ec2.owner_of_eni(eni_id) == instance_id


def test_associate_refuses_to_move_an_associated_eip(ec2: Ec2, ec2_world: Ec2World) -> None:
    _, first_eni, first_ip = ec2_world.launch_instance()
    _, second_eni, second_ip = ec2_world.launch_instance()
    allocation_id, _ = ec2_world.allocate_eip({"pool": "web"})
    association_id = ec2.associate(allocation_id=allocation_id, eni_id=first_eni, private_ip=first_ip)

    with pytest.raises(AlreadyAssociated) as excinfo:
        ec2.associate(allocation_id=allocation_id, eni_id=second_eni, private_ip=second_ip)

    assert excinfo.value.code == "Resource.AlreadyAssociated"
    assert excinfo.value.operation == "AssociateAddress"
    raw = ec2_world.address(allocation_id)
    assert (raw["AssociationId"], raw["NetworkInterfaceId"]) == (association_id, first_eni)


def test_associate_moves_only_when_reassociation_is_allowed(ec2: Ec2, ec2_world: Ec2World) -> None:
    _, first_eni, first_ip = ec2_world.launch_instance()
    _, second_eni, second_ip = ec2_world.launch_instance()
    allocation_id, _ = ec2_world.allocate_eip({"pool": "web"})
    ec2.associate(allocation_id=allocation_id, eni_id=first_eni, private_ip=first_ip)

    ec2.associate(allocation_id=allocation_id, eni_id=second_eni, private_ip=second_ip, allow_reassociation=True)

    assert ec2_world.address(allocation_id)["NetworkInterfaceId"] == second_eni


def test_associate_unknown_allocation_is_not_found(ec2: Ec2, ec2_world: Ec2World) -> None:
    _, eni_id, private_ip = ec2_world.launch_instance()

    with pytest.raises(NotFound):
        ec2.associate(allocation_id="eipalloc-0123456789abcdef0", eni_id=eni_id, private_ip=private_ip)


def test_disassociate_is_idempotent(ec2: Ec2, ec2_world: Ec2World) -> None:
    _, eni_id, private_ip = ec2_world.launch_instance()
    allocation_id, _ = ec2_world.allocate_eip({"pool": "web"})
    association_id = ec2.associate(allocation_id=allocation_id, eni_id=eni_id, private_ip=private_ip)

    ec2.disassociate(association_id)
    ec2.disassociate(association_id)
    ec2.disassociate("eipassoc-0123456789abcdef0")

    raw = ec2_world.address(allocation_id)
    assert not raw.get("AssociationId")
    assert not raw.get("NetworkInterfaceId")


def test_eip_released_after_terminate_can_be_reassociated(ec2: Ec2, ec2_world: Ec2World) -> None:
    # moto keeps the association after terminate (AWS drops it): disassociating first is right on both.
    old_instance, old_eni, old_ip = ec2_world.launch_instance()
    _, new_eni, new_ip = ec2_world.launch_instance()
    allocation_id, _ = ec2_world.allocate_eip({"pool": "web"})
    association_id = ec2.associate(allocation_id=allocation_id, eni_id=old_eni, private_ip=old_ip)
    ec2_world.terminate(old_instance, drop_associations=False)

    still = ec2.get_address(allocation_id)
    assert still is not None and still.association_id == association_id
    ec2.disassociate(association_id)
    ec2.associate(allocation_id=allocation_id, eni_id=new_eni, private_ip=new_ip)

    assert ec2_world.address(allocation_id)["NetworkInterfaceId"] == new_eni


# --- get_address / owner_of_eni ------------------------------------------------------------------


def test_get_address(ec2: Ec2, ec2_world: Ec2World) -> None:
    _, eni_id, private_ip = ec2_world.launch_instance()
    allocation_id, public_ip = ec2_world.allocate_eip({"pool": "web"})

    before = ec2.get_address(allocation_id)
    association_id = ec2.associate(allocation_id=allocation_id, eni_id=eni_id, private_ip=private_ip)
    after = ec2.get_address(allocation_id)

    assert before is not None and before.association_id is None and before.public_ip == public_ip
    assert after is not None and (after.association_id, after.eni_id) == (association_id, eni_id)
    assert ec2.get_address("eipalloc-0123456789abcdef0") is None


def test_owner_of_eni(ec2: Ec2, ec2_world: Ec2World) -> None:
    instance_id, primary_eni, _ = ec2_world.launch_instance(extra_enis=1)
    subnet_id = ec2_world.ensure_network()["us-east-1a"]
    loose_eni = ec2_world.client.create_network_interface(SubnetId=subnet_id)["NetworkInterface"]["NetworkInterfaceId"]

    assert ec2.owner_of_eni(primary_eni) == instance_id
    assert ec2.owner_of_eni(loose_eni) is None
    assert ec2.owner_of_eni("eni-0123456789abcdef0") is None


# --- clients -------------------------------------------------------------------------------------


def test_clients_are_shared_per_region_and_endpoint(ec2_emulator: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    assert Ec2(REGION).client is Ec2(REGION).client
    assert Ec2("eu-west-1").client is not Ec2(REGION).client
    monkeypatch.setenv("AWS_ENDPOINT_URL_EC2", "http://127.0.0.1:9")
    assert Ec2(REGION).client.meta.endpoint_url == "http://127.0.0.1:9"


def test_clients_of_every_region_share_one_parsed_service_model(ec2_emulator: Any) -> None:
    """EC2's model parses into about 50,000 objects: read once per process, not once per client."""
    models = {id(Ec2(region).client.meta.service_model._service_description)  # the parsed JSON itself
              for region in (REGION, "eu-west-1", "ap-south-2")}
    assert len(models) == 1


def test_client_has_standard_retries_and_timeouts(ec2: Ec2) -> None:
    config = ec2.client.meta.config
    # botocore reads retries.max_attempts as *retries*: 1 try + 3 retries.
    assert config.retries == {"mode": "standard", "total_max_attempts": 4}
    assert (config.connect_timeout, config.read_timeout) == (5, 10)


def test_endpoint_comes_from_the_environment(ec2: Ec2, ec2_emulator: Any) -> None:
    assert ec2.client.meta.endpoint_url == ec2_emulator.endpoint_url


# --- error mapping -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("code", "status", "expected"),
    [
        ("RequestLimitExceeded", 503, Throttled),
        ("Throttling", 400, Throttled),
        ("Resource.AlreadyAssociated", 400, AlreadyAssociated),
        ("InvalidAllocationID.NotFound", 400, NotFound),
        ("InvalidAssociationID.NotFound", 400, NotFound),
        ("InvalidInstanceID.NotFound", 400, NotFound),
        ("InvalidNetworkInterfaceID.NotFound", 400, NotFound),
        ("InvalidAddress.NotFound", 400, NotFound),
        ("InternalError", 500, Transient),
        ("Unavailable", 503, Transient),
        ("SomethingNew", 502, Transient),
        ("UnauthorizedOperation", 403, Permanent),
        ("InvalidParameterValue", 400, Permanent),
        ("AuthFailure", 401, Permanent),
    ],
)
def test_error_class_for(code: str, status: int, expected: type) -> None:
    assert error_class_for(code, status) is expected


def test_sdk_exceptions_map_to_domain_errors() -> None:
    client_error = botocore.exceptions.ClientError(
        {"Error": {"Code": "RequestLimitExceeded", "Message": "slow down"}, "ResponseMetadata": {}},
        "AssociateAddress",
    )
    throttled = to_domain_error(client_error, "AssociateAddress")
    assert isinstance(throttled, Throttled) and throttled.code == "RequestLimitExceeded"
    assert "slow down" in str(throttled)

    timeout = botocore.exceptions.ReadTimeoutError(endpoint_url="http://127.0.0.1:1")
    assert isinstance(to_domain_error(timeout), Transient)
    refused = botocore.exceptions.EndpointConnectionError(endpoint_url="http://127.0.0.1:1")
    assert isinstance(to_domain_error(refused), Transient)
    assert isinstance(to_domain_error(botocore.exceptions.NoCredentialsError()), Permanent)


@pytest.mark.parametrize(
    ("status", "code", "expected", "attempts"),
    [
        # Retried by botocore's standard mode (1 try + 3 retries), then surfaced.
        (503, "RequestLimitExceeded", Throttled, 4),
        (500, "InternalError", Transient, 4),
        (403, "UnauthorizedOperation", Permanent, 1),
    ],
)
def test_http_errors_are_mapped(
    ec2_emulator: Any, monkeypatch: pytest.MonkeyPatch, status: int, code: str, expected: type, attempts: int
) -> None:
    with ErrorServer(status, code) as server:
        monkeypatch.setenv("AWS_ENDPOINT_URL_EC2", server.url)
        ec2 = Ec2(REGION)
        with pytest.raises(expected) as excinfo:
            ec2.associate(allocation_id="eipalloc-1", eni_id="eni-1", private_ip="10.0.0.1")
    assert excinfo.value.code == code
    assert server.attempts == attempts


def test_unreachable_endpoint_is_transient(ec2_emulator: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    from sandbox.ports import free_port

    monkeypatch.setenv("AWS_ENDPOINT_URL_EC2", f"http://127.0.0.1:{free_port()}")
    with pytest.raises(Transient):
        Ec2(REGION).list_all_addresses()


def test_address_is_hashable_despite_its_tags() -> None:
    address = Address("eipalloc-1", "203.0.113.1", {"pool": "web"}, None, None, None, None)
    assert address in {address}


# --- issue 8: shapes of real AWS answers ------------------------------------------------------------


def test_primary_eni_requires_network_card_zero() -> None:
    # A multi-card instance (p5, trn1...) has a DeviceIndex 0 on every card; card 1's is listed first here.
    raw = {
        "InstanceId": "i-0bbb",
        "State": {"Name": "running"},
        "NetworkInterfaces": [
            {"NetworkInterfaceId": "eni-card1", "PrivateIpAddress": "10.0.1.5",
             "Attachment": {"DeviceIndex": 0, "NetworkCardIndex": 1}},
            {"NetworkInterfaceId": "eni-card0", "PrivateIpAddress": "10.0.0.5",
             "Attachment": {"DeviceIndex": 0, "NetworkCardIndex": 0}},
        ],
    }
    instance = Instance.from_aws(raw)
    assert (instance.eni_id, instance.private_ip) == ("eni-card0", "10.0.0.5")
    only_card1 = {**raw, "NetworkInterfaces": raw["NetworkInterfaces"][:1]}
    assert Instance.from_aws(only_card1).eni_id is None


_CARRIER_IP_RESPONSE = b"""<?xml version="1.0" encoding="UTF-8"?>
<DescribeAddressesResponse xmlns="http://ec2.amazonaws.com/doc/2016-11-15/">
  <requestId>59dbff89-35bd-4eac-99ed-be587EXAMPLE</requestId>
  <addressesSet>
    <item>
      <allocationId>eipalloc-0carrier0000000001</allocationId>
      <domain>vpc</domain>
      <carrierIp>155.146.10.1</carrierIp>
      <networkBorderGroup>us-east-1-wl1-bos-wlz-1</networkBorderGroup>
      <tagSet><item><key>pool</key><value>web</value></item></tagSet>
    </item>
    <item>
      <publicIp>203.0.113.10</publicIp>
      <allocationId>eipalloc-0public00000000001</allocationId>
      <domain>vpc</domain>
      <tagSet><item><key>pool</key><value>web</value></item></tagSet>
    </item>
  </addressesSet>
</DescribeAddressesResponse>"""


def test_an_address_without_a_public_ip_is_skipped(ec2_emulator: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    with CannedServer(_CARRIER_IP_RESPONSE) as server:
        monkeypatch.setenv("AWS_ENDPOINT_URL_EC2", server.url)
        ec2 = Ec2(REGION)
        assert [a.allocation_id for a in ec2.list_all_addresses()] == ["eipalloc-0public00000000001"]
        assert [a.public_ip for a in ec2.list_all_addresses()] == ["203.0.113.10"]


def test_addresses_on_a_private_ip(ec2: Ec2, ec2_world: Ec2World) -> None:
    _, eni_id, private_ip = ec2_world.launch_instance()
    _, other_eni, other_ip = ec2_world.launch_instance()
    foreign, _ = ec2_world.allocate_eip({"team": "legacy"})
    assert ec2.addresses_on(eni_id=eni_id, private_ip=private_ip) == []
    ec2.associate(allocation_id=foreign, eni_id=eni_id, private_ip=private_ip)
    assert [a.allocation_id for a in ec2.addresses_on(eni_id=eni_id, private_ip=private_ip)] == [foreign]
    assert ec2.addresses_on(eni_id=other_eni, private_ip=other_ip) == []


def test_a_change_stopped_before_its_retry_after_a_5xx_may_have_landed(
    ec2_world: Ec2World, ec2_emulator: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """AssociateAddress reaches AWS and is carried out, but the answer is a 500; botocore retries, and the retry
    is stopped before it is sent (the pass's deadline in the token wait). That is not "not sent": the first
    attempt landed, and the caller must keep its claim."""
    from sandbox.faults import FaultProxy, FaultRates
    from workers import budget

    proxy = FaultProxy(ec2_emulator.endpoint_url, rates=FaultRates(after=1.0, actions=frozenset({"AssociateAddress"})))
    proxy.start()
    monkeypatch.setenv("AWS_ENDPOINT_URL_EC2", proxy.url)
    real_acquire = budget.acquire
    mutations: list[str] = []

    def acquire(region: str, kind: str, **kwargs: Any) -> None:
        if kind == budget.MUTATE:
            mutations.append(kind)
            if len(mutations) > 1:
                raise budget.OutOfTime("no EC2 mutate token before the pass deadline")
        real_acquire(region, kind, **kwargs)

    monkeypatch.setattr(budget, "acquire", acquire)
    allocation_id, _ = ec2_world.allocate_eip({"eipdash/pool": "ingress"})
    _, eni_id, private_ip = ec2_world.launch_instance()
    try:
        with pytest.raises(Transient) as failed:
            Ec2(REGION).associate(allocation_id=allocation_id, eni_id=eni_id, private_ip=private_ip)
    finally:
        proxy.stop()
    assert len(mutations) == 2 and ec2_world.address(allocation_id).get("NetworkInterfaceId") == eni_id  # landed
    assert failed.value.code != "OutOfTime" and getattr(failed.value, "maybe_landed", False)


# --- The region's facts: the EIP quota and the reads behind the egress paths -------------------------------


def aws_calls(action: str, outcome: str) -> float:
    from prometheus_client import REGISTRY

    return REGISTRY.get_sample_value("eipdash_aws_calls_total", {"action": action, "outcome": outcome}) or 0.0


def test_the_eip_quota_comes_from_the_account_attribute_where_ec2_alone_has_an_endpoint(ec2: Ec2) -> None:
    # AWS_ENDPOINT_URL_EC2 points at the emulator and nothing at Service Quotas: AWS's would be asked with the
    # emulator's credentials, so it is not asked at all.
    asked = aws_calls("GetServiceQuota", "permanent") + aws_calls("GetServiceQuota", "ok")
    assert ec2.eip_quota() == (5, ec2_module.QUOTA_FROM_ACCOUNT_ATTRIBUTE)  # moto's vpc-max-elastic-ips
    assert aws_calls("GetServiceQuota", "permanent") + aws_calls("GetServiceQuota", "ok") == asked


def test_the_eip_quota_falls_back_to_the_account_attribute_when_service_quotas_has_none(
    ec2_emulator: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    # moto serves Service Quotas on the same server, but only VPC's quotas: EC2's L-0263D0A3 is
    # NoSuchResourceException there, as it is in a region where AWS does not serve it.
    monkeypatch.setenv("AWS_ENDPOINT_URL_SERVICE_QUOTAS", ec2_emulator.endpoint_url)
    refused = aws_calls("GetServiceQuota", "permanent")
    limit, source = Ec2(REGION).eip_quota()
    assert (limit, source) == (5, ec2_module.QUOTA_FROM_ACCOUNT_ATTRIBUTE)
    assert aws_calls("GetServiceQuota", "permanent") == refused + 1


def test_the_eip_quota_comes_from_service_quotas_when_it_answers(ec2: Ec2, monkeypatch: pytest.MonkeyPatch) -> None:
    answer = b'{"Quota": {"ServiceCode": "ec2", "QuotaCode": "L-0263D0A3", "QuotaName": "EC2-VPC Elastic IPs", ' \
             b'"Value": 120.0, "Adjustable": true}}'
    with CannedServer(answer) as server:
        monkeypatch.setenv("AWS_ENDPOINT_URL_SERVICE_QUOTAS", server.url)
        assert ec2.eip_quota() == (120, ec2_module.QUOTA_FROM_SERVICE_QUOTAS)


def test_no_eip_quota_is_guessed(ec2_emulator: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AWS_ENDPOINT_URL_SERVICE_QUOTAS", ec2_emulator.endpoint_url)  # no such quota
    with ErrorServer(403, "UnauthorizedOperation") as server:  # nor DescribeAccountAttributes
        monkeypatch.setenv("AWS_ENDPOINT_URL_EC2", server.url)
        with pytest.raises(Permanent) as failed:
            Ec2(REGION).eip_quota()
    assert "NoSuchResourceException" in str(failed.value) and "UnauthorizedOperation" in str(failed.value)


def test_the_egress_reads_see_the_whole_region_through_the_read_budget(
    ec2: Ec2, ec2_world: Ec2World, requests_sent: RequestCounter
) -> None:
    from workers import budget

    subnets = ec2_world.ensure_network()
    vpc_id = ec2_world.client.describe_subnets(SubnetIds=[next(iter(subnets.values()))])["Subnets"][0]["VpcId"]
    nat_id = ec2_world.client.create_nat_gateway(SubnetId=next(iter(subnets.values())))["NatGateway"]["NatGatewayId"]
    assert set(subnets.values()) <= {s["SubnetId"] for s in ec2.describe_subnets()}
    assert vpc_id in {t["VpcId"] for t in ec2.describe_route_tables()}
    assert nat_id in {n["NatGatewayId"] for n in ec2.describe_nat_gateways()}
    # One request each (moto serves one page), each taking a token of the read bucket first.
    assert requests_sent.by_operation == {"DescribeSubnets": 1, "DescribeRouteTables": 1, "DescribeNatGateways": 1}
    assert {budget.kind_of(op) for op in requests_sent.by_operation} == {budget.READ}
    assert budget.kind_of("DescribeAccountAttributes") == budget.READ
