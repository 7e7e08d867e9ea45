"""The EC2 fault proxy, in front of the real moto server, with eipdash's own boto3 adapter behind
AWS_ENDPOINT_URL_EC2: what boto3 sees, what moto ends up holding, and what the proxy counted."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import boto3
import pytest
from botocore.config import Config

from sandbox.ec2_emulator import Ec2Emulator, Ec2World
from sandbox.faults import Dice, FaultProxy, FaultRates
from sandbox.kube_emulator import KubeEmulator, KubeFaultRates, KubeFaults, node_manifest
from workers.ec2 import Ec2, Throttled, Transient
from workers.kube import Conflict as KubeConflict
from workers.kube import Kube
from workers.kube import Transient as KubeTransient


@pytest.fixture
def proxy_for(ec2_emulator: Ec2Emulator, monkeypatch: pytest.MonkeyPatch) -> Iterator[object]:
    started: list[FaultProxy] = []

    def start(rates: FaultRates, seed: int = 7) -> FaultProxy:
        proxy = FaultProxy(ec2_emulator.endpoint_url, seed=seed, rates=rates).start()
        started.append(proxy)
        monkeypatch.setenv("AWS_ENDPOINT_URL_EC2", proxy.url)  # boto3's standard resolution, as in production
        return proxy

    yield start
    for proxy in started:
        proxy.stop()


def fast_client(url: str, read_timeout: float = 10) -> Ec2:
    """One attempt, a short read timeout: each request meets the proxy once."""
    client = boto3.client("ec2", region_name="us-east-1", endpoint_url=url, aws_access_key_id="testing",
                          aws_secret_access_key="testing",
                          config=Config(retries={"mode": "standard", "total_max_attempts": 1},
                                        read_timeout=read_timeout, connect_timeout=2))
    return Ec2("us-east-1", client=client)


def test_no_faults_is_a_transparent_proxy(proxy_for, ec2_world: Ec2World) -> None:
    allocation_id, public_ip = ec2_world.allocate_eip({"pool": "a"})
    proxy = proxy_for(FaultRates())

    addresses = Ec2("us-east-1").list_all_addresses()

    assert [(a.allocation_id, a.public_ip) for a in addresses] == [(allocation_id, public_ip)]
    assert proxy.requests == 1 and proxy.injected == 0


def test_throttling_survives_botos_retries_as_throttled(proxy_for) -> None:
    proxy = proxy_for(FaultRates(throttle=1.0))

    with pytest.raises(Throttled) as raised:
        Ec2("us-east-1").list_all_addresses()  # eipdash's client: standard mode, max_attempts 3 retries

    assert raised.value.code == "RequestLimitExceeded"
    assert proxy.counts == {"throttle": 4} and proxy.by_action == {"DescribeAddresses": 4}  # 1 try + 3 retries


def test_internal_error(proxy_for) -> None:
    proxy = proxy_for(FaultRates(internal=1.0))

    with pytest.raises(Transient) as raised:
        fast_client(proxy.url).list_all_addresses()

    assert raised.value.code == "InternalError" and proxy.counts == {"internal": 1}


def test_a_held_connection_is_a_client_timeout(proxy_for) -> None:
    proxy = proxy_for(FaultRates(timeout=1.0, hold_seconds=3.0))

    with pytest.raises(Transient):
        fast_client(proxy.url, read_timeout=0.5).list_all_addresses()

    assert proxy.counts == {"timeout": 1}


def test_a_500_after_the_call_went_through(proxy_for, ec2_world: Ec2World) -> None:
    allocation_id, _ = ec2_world.allocate_eip({"pool": "a"})
    _, eni_id, private_ip = ec2_world.launch_instance()
    proxy = proxy_for(FaultRates(after=1.0, actions=frozenset({"AssociateAddress"})))
    ec2 = fast_client(proxy.url)

    with pytest.raises(Transient):
        ec2.associate(allocation_id=allocation_id, eni_id=eni_id, private_ip=private_ip)

    # The client saw a failure, yet moto holds the association: a retry must not assume nothing happened.
    assert ec2_world.address(allocation_id).get("NetworkInterfaceId") == eni_id
    address = ec2.get_address(allocation_id)  # not a faulted action
    assert address is not None and address.eni_id == eni_id
    assert proxy.counts == {"after": 1} and proxy.by_action == {"AssociateAddress": 1}


def test_the_same_seed_gives_the_same_faults() -> None:
    rates = FaultRates(throttle=0.2, internal=0.1, timeout=0.05, after=0.1)
    actions = ["DescribeAddresses", "AssociateAddress", "DescribeInstances"] * 50

    first, again, other = Dice(42, rates), Dice(42, rates), Dice(43, rates)

    rolls = [first.roll(a) for a in actions]

    assert rolls == [again.roll(a) for a in actions]
    assert rolls != [other.roll(a) for a in actions]
    assert set(rolls) == {None, "throttle", "internal", "timeout", "after"}


def test_rates_are_validated() -> None:
    with pytest.raises(ValueError):
        FaultRates(throttle=0.7, after=0.5)


# --- Kubernetes faults: the emulator's opt-in injector, seen through eipdash's Kubernetes adapter --------


@pytest.fixture
def faulty_kube(tmp_path: Path) -> Iterator[KubeEmulator]:
    emulator = KubeEmulator(faults=KubeFaults(KubeFaultRates(), seed=3)).start()
    emulator.create("nodes", node_manifest("n1", "i-0123456789abcdef0"))
    try:
        yield emulator
    finally:
        emulator.stop()


def adapter(url: str, tmp_path: Path) -> Kube:
    emulator_config = tmp_path / f"kubeconfig-{url.rsplit(':', 1)[1]}"
    config = {"apiVersion": "v1", "kind": "Config", "current-context": "c",
              "clusters": [{"name": "c", "cluster": {"server": url}}], "users": [{"name": "u", "user": {}}],
              "contexts": [{"name": "c", "context": {"cluster": "c", "user": "u"}}]}
    emulator_config.write_text(json.dumps(config))
    return Kube(config_file=str(emulator_config), request_timeout=5)


def test_kube_faults_are_off_by_default(kube_emulator: KubeEmulator) -> None:
    assert kube_emulator.faults is None


def test_kube_500_on_reads(faulty_kube: KubeEmulator, tmp_path: Path) -> None:
    assert faulty_kube.faults is not None
    faulty_kube.faults.rates = KubeFaultRates(read_error=1.0)

    with pytest.raises(KubeTransient):
        adapter(faulty_kube.url, tmp_path).list_all_nodes()
    # The side door sees the world without the weather.
    assert [n.name for n in adapter(faulty_kube.open_side_door(), tmp_path).list_all_nodes()] == ["n1"]
    assert faulty_kube.faults.counts == {"read_error": 1}


def test_kube_409_and_500_on_writes_change_nothing(faulty_kube: KubeEmulator, tmp_path: Path) -> None:
    assert faulty_kube.faults is not None
    kube = adapter(faulty_kube.url, tmp_path)
    faulty_kube.faults.rates = KubeFaultRates(conflict=1.0)
    with pytest.raises(KubeConflict):
        kube.set_eip_marks("n1", public_ip="198.51.100.1", allocation_id="eipalloc-1")
    faulty_kube.faults.rates = KubeFaultRates(write_error=1.0)
    with pytest.raises(KubeTransient):
        kube.set_eip_marks("n1", public_ip="198.51.100.1", allocation_id="eipalloc-1")

    assert "eipdash.io/eip" not in faulty_kube.get("nodes", "n1")["metadata"]["labels"]
    assert faulty_kube.faults.counts == {"conflict": 1, "write_error": 1}


def test_kube_watch_streams_are_cut(faulty_kube: KubeEmulator, tmp_path: Path) -> None:
    assert faulty_kube.faults is not None
    faulty_kube.faults.rates = KubeFaultRates(watch_drop=1.0, drop_after=(0.2, 0.4))
    seen: list[str] = []

    with pytest.raises(KubeTransient):
        for event in adapter(faulty_kube.url, tmp_path).watch_nodes(timeout_seconds=20):
            seen.append(event.node.name if event.node else event.type)

    assert seen == ["n1"] and faulty_kube.faults.counts == {"watch_drop": 1}


def test_kube_faults_follow_the_seed() -> None:
    rates = KubeFaultRates(conflict=0.2, write_error=0.1, read_error=0.3)
    requests = [("PATCH", "nodes", "a"), ("GET", "nodes", None), ("GET", "pods", None)] * 30

    def codes(seed: int) -> list[int | None]:
        faults = KubeFaults(rates, seed=seed)
        return [getattr(faults.for_request(*r), "code", None) for r in requests]

    assert codes(5) == codes(5) and codes(5) != codes(6)
    assert set(codes(5)) == {None, 409, 500}
