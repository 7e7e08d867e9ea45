"""The EC2 emulator wrapper, its world-building helpers, and the moto-vs-AWS differences it documents."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import urllib.request
from pathlib import Path
from typing import Any

import botocore.exceptions
import pytest

from sandbox.ec2_emulator import Ec2Emulator, Ec2World
from sandbox.ports import free_port
from tests.fixtures.polling import eventually
from tests.fixtures.processes import as_a_background_job, interrupt, wait_for_line

ROOT = Path(__file__).resolve().parents[2]


def _answers(url: str) -> bool:
    try:
        # Not data.json: it dumps every model of the process, slow once other tests have filled moto.
        with urllib.request.urlopen(f"{url}/moto-api/config", timeout=2) as response:
            return bool(200 <= response.status < 300)
    except OSError:
        return False


def _refused(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=0.5):
            return False
    except OSError:
        return True


def _port_closed(port: int, timeout: float = 10.0) -> bool:
    return bool(eventually(lambda: _refused(port), timeout=timeout, what=f"port {port} closed"))


# --- the server ----------------------------------------------------------------------------------


def test_start_answers_on_loopback_and_stop_closes_the_port() -> None:
    emulator = Ec2Emulator()
    emulator.start()
    try:
        assert emulator.endpoint_url == f"http://127.0.0.1:{emulator.port}"
        assert _answers(emulator.endpoint_url)
    finally:
        emulator.stop()
    assert _port_closed(emulator.port)


def test_env_points_boto3_at_the_emulator(ec2_emulator: Ec2Emulator) -> None:
    assert ec2_emulator.env() == {
        "AWS_ENDPOINT_URL_EC2": ec2_emulator.endpoint_url,
        "AWS_DEFAULT_REGION": "us-east-1",
        "AWS_ACCESS_KEY_ID": "testing",
        "AWS_SECRET_ACCESS_KEY": "testing",
    }
    assert os.environ["AWS_ENDPOINT_URL_EC2"] == ec2_emulator.endpoint_url


def test_reset_forgets_everything(ec2_emulator: Ec2Emulator, ec2_world: Ec2World) -> None:
    ec2_world.launch_instance()
    ec2_world.allocate_eip({"pool": "web"})

    ec2_emulator.reset()

    assert ec2_world.client.describe_addresses()["Addresses"] == []
    assert ec2_world.client.describe_instances()["Reservations"] == []


def test_no_default_amis_leaves_moto_without_public_images_and_still_launches(ec2_emulator: Ec2Emulator,
                                                                              ec2_world: Ec2World) -> None:
    """moto's public AMIs, rebuilt for every region at every reset, were most of a test's reset; nothing
    launches from them (the sandbox's image id is one moto does not check)."""
    ec2_emulator.reset()
    assert ec2_world.client.describe_images(Owners=["amazon"])["Images"] == []
    instance_id, _, _ = ec2_world.launch_instance()
    reservations = ec2_world.client.describe_instances(InstanceIds=[instance_id])["Reservations"]
    assert reservations[0]["Instances"][0]["State"]["Name"] == "running"


def test_main_runs_in_the_foreground_until_interrupted(tmp_path: Path) -> None:
    port = free_port()
    process = subprocess.Popen(
        [sys.executable, "-m", "sandbox.ec2_emulator", "--port", str(port)],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
        preexec_fn=as_a_background_job,  # SIGINT must stop it even there
    )
    try:
        # The env lines are the emulator's "ready" signal: it prints them only once it answers. Waiting
        # on the port instead raced the print, and a SIGINT sent in between left stdout empty.
        printed = wait_for_line(process, "AWS_ENDPOINT_URL_EC2=", timeout=60)
        assert _answers(f"http://127.0.0.1:{port}")
        interrupt(process)
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
    assert f"AWS_ENDPOINT_URL_EC2=http://127.0.0.1:{port}\n" in printed
    assert process.returncode == 0
    assert _port_closed(port)


# --- the world helpers ---------------------------------------------------------------------------


def test_ensure_network_gives_one_subnet_per_az_once(ec2_world: Ec2World) -> None:
    subnets = ec2_world.ensure_network()

    assert sorted(subnets) == ["us-east-1a", "us-east-1b", "us-east-1c"]
    described = ec2_world.client.describe_subnets(SubnetIds=list(subnets.values()))["Subnets"]
    assert {s["SubnetId"]: s["AvailabilityZone"] for s in described} == {v: k for k, v in subnets.items()}
    # A second world on the same emulator finds the network rather than building another VPC.
    again = Ec2World(ec2_world.client.meta.endpoint_url).ensure_network()
    assert again == subnets
    sandbox_vpcs = ec2_world.client.describe_vpcs(Filters=[{"Name": "tag:eipdash-sandbox", "Values": ["true"]}])["Vpcs"]
    assert len(sandbox_vpcs) == 1


def test_launch_instance_with_extra_enis(ec2_world: Ec2World) -> None:
    instance_id, primary_eni, private_ip = ec2_world.launch_instance(az="us-east-1b", extra_enis=2)

    instance = ec2_world.client.describe_instances(InstanceIds=[instance_id])["Reservations"][0]["Instances"][0]
    assert instance["State"]["Name"] == "running"
    assert instance["Placement"]["AvailabilityZone"] == "us-east-1b"
    enis = ec2_world.client.describe_network_interfaces(
        Filters=[{"Name": "attachment.instance-id", "Values": [instance_id]}]
    )["NetworkInterfaces"]
    by_index = {e["Attachment"]["DeviceIndex"]: e for e in enis}
    assert sorted(by_index) == [0, 1, 2]
    assert by_index[0]["NetworkInterfaceId"] == primary_eni
    assert by_index[0]["PrivateIpAddress"] == private_ip


def test_allocate_eip_and_address(ec2_world: Ec2World) -> None:
    allocation_id, public_ip = ec2_world.allocate_eip({"pool": "web", "Name": "eip-1"})
    untagged_id, _ = ec2_world.allocate_eip({})

    raw = ec2_world.address(allocation_id)
    assert raw["PublicIp"] == public_ip
    assert raw["Domain"] == "vpc"
    assert {t["Key"]: t["Value"] for t in raw["Tags"]} == {"pool": "web", "Name": "eip-1"}
    assert not ec2_world.address(untagged_id).get("Tags")


def _associate(world: Ec2World, allocation_id: str, eni_id: str, private_ip: str, **kwargs: Any) -> str:
    return str(
        world.client.associate_address(
            AllocationId=allocation_id, NetworkInterfaceId=eni_id, PrivateIpAddress=private_ip, **kwargs
        )["AssociationId"]
    )


def test_terminate_drops_associations_like_aws(ec2_world: Ec2World) -> None:
    instance_id, eni_id, private_ip = ec2_world.launch_instance(extra_enis=1)
    allocation_id, _ = ec2_world.allocate_eip({"pool": "web"})
    _associate(ec2_world, allocation_id, eni_id, private_ip)

    ec2_world.terminate(instance_id)

    raw = ec2_world.address(allocation_id)
    assert not raw.get("AssociationId") and not raw.get("NetworkInterfaceId")
    state = ec2_world.client.describe_instances(InstanceIds=[instance_id])["Reservations"][0]["Instances"][0]
    assert state["State"]["Name"] == "terminated"


# --- moto 5.2.5 vs AWS: these pin the differences the module docstring documents ---------------


def test_moto_keeps_the_association_after_terminate(ec2_world: Ec2World) -> None:
    """(a) AWS drops it when the instance goes away."""
    instance_id, eni_id, private_ip = ec2_world.launch_instance()
    allocation_id, _ = ec2_world.allocate_eip({"pool": "web"})
    association_id = _associate(ec2_world, allocation_id, eni_id, private_ip)

    ec2_world.terminate(instance_id, drop_associations=False)

    raw = ec2_world.address(allocation_id)
    assert raw["AssociationId"] == association_id
    assert raw["NetworkInterfaceId"] == eni_id


@pytest.mark.parametrize("allow", [False, None])
def test_moto_refuses_to_move_an_associated_eip(ec2_world: Ec2World, allow: bool | None) -> None:
    """(b) AWS refuses only for an explicit AllowReassociation=False; by default it moves the EIP."""
    _, first_eni, first_ip = ec2_world.launch_instance()
    _, second_eni, second_ip = ec2_world.launch_instance()
    allocation_id, _ = ec2_world.allocate_eip({"pool": "web"})
    _associate(ec2_world, allocation_id, first_eni, first_ip)
    kwargs = {} if allow is None else {"AllowReassociation": allow}

    with pytest.raises(botocore.exceptions.ClientError) as excinfo:
        _associate(ec2_world, allocation_id, second_eni, second_ip, **kwargs)

    assert excinfo.value.response["Error"]["Code"] == "Resource.AlreadyAssociated"
    assert ec2_world.address(allocation_id)["NetworkInterfaceId"] == first_eni
    _associate(ec2_world, allocation_id, second_eni, second_ip, AllowReassociation=True)
    assert ec2_world.address(allocation_id)["NetworkInterfaceId"] == second_eni


def test_moto_leaves_instance_id_empty_after_an_eni_association(ec2_world: Ec2World) -> None:
    """(c) AWS reports the instance the ENI is attached to."""
    instance_id, eni_id, private_ip = ec2_world.launch_instance()
    allocation_id, _ = ec2_world.allocate_eip({"pool": "web"})
    _associate(ec2_world, allocation_id, eni_id, private_ip)

    raw = ec2_world.address(allocation_id)

    assert raw["NetworkInterfaceId"] == eni_id
    assert not raw.get("InstanceId")
    eni = ec2_world.client.describe_network_interfaces(NetworkInterfaceIds=[eni_id])["NetworkInterfaces"][0]
    assert eni["Attachment"]["InstanceId"] == instance_id  # the ENI still knows its instance


def test_moto_multi_value_tag_key_filter_drops_eips_with_other_tags(ec2_world: Ec2World) -> None:
    """(d) AWS matches an EIP carrying *any* of the keys; moto wants its keys to be a subset or superset."""
    plain, _ = ec2_world.allocate_eip({"pool-a": "web"})
    with_name, _ = ec2_world.allocate_eip({"pool-a": "web", "Name": "eip-1"})

    def tag_key_filter(*keys: str) -> set[str]:
        addresses = ec2_world.client.describe_addresses(Filters=[{"Name": "tag-key", "Values": list(keys)}])
        return {a["AllocationId"] for a in addresses["Addresses"]}

    assert tag_key_filter("pool-a") == {plain, with_name}
    assert tag_key_filter("pool-a", "pool-b") == {plain}  # AWS would also return with_name


def test_fast_tag_lookup_answers_what_moto_answers(ec2_world: Ec2World) -> None:
    """The emulator's tag lookup (a dict) gives each resource the list moto's scan of every tag gives."""
    from moto.ec2.models import ec2_backends

    allocation_id, _ = ec2_world.allocate_eip({"pool": "a", "Name": "x"})
    ec2_world.allocate_eip({"pool": "b"})
    instance_id, eni_id, _ = ec2_world.launch_instance()
    ec2_world.client.create_tags(Resources=[instance_id], Tags=[{"Key": "role", "Value": "node"}])
    backend = ec2_backends["123456789012"]["us-east-1"]
    resources: list[Any] = [backend.addresses[0], backend.addresses[1], backend.get_instance(instance_id),
                            backend.get_network_interface(eni_id)]

    for resource in resources:
        assert resource.get_tags() == backend.describe_tags(filters={"resource-id": [resource.id]})
    tags = ec2_world.client.describe_addresses(AllocationIds=[allocation_id])["Addresses"][0]["Tags"]
    assert sorted((t["Key"], t["Value"]) for t in tags) == [("Name", "x"), ("pool", "a")]


def test_account_eip_quota_is_what_describe_account_attributes_says() -> None:
    """The sandbox's account has a raised EIP quota (its pools and decoys hold 13 addresses); the EC2 adapter reads
    it as eipdash reads AWS's."""
    import boto3
    from moto.ec2.responses.account_attributes import AccountAttributes

    from sandbox.ec2_emulator import Ec2Emulator, account_eip_quota

    original = AccountAttributes.describe_account_attributes
    emulator = Ec2Emulator(None).start()
    try:
        account_eip_quota(20)
        client = boto3.client("ec2", region_name="us-east-1", endpoint_url=emulator.endpoint_url,
                              aws_access_key_id="testing", aws_secret_access_key="testing")
        attributes = client.describe_account_attributes(AttributeNames=["vpc-max-elastic-ips"])["AccountAttributes"]
        values = {a["AttributeName"]: [v["AttributeValue"] for v in a["AttributeValues"]] for a in attributes}
        assert values["vpc-max-elastic-ips"] == ["20"]
    finally:
        AccountAttributes.describe_account_attributes = original  # type: ignore[method-assign]
        emulator.stop()
