"""The EC2 fault proxy, in front of the real moto server, with eipdash's own boto3 adapter behind
AWS_ENDPOINT_URL_EC2: what boto3 sees, what moto ends up holding, and what the proxy counted."""

from __future__ import annotations

from collections.abc import Iterator

import boto3
import pytest
from botocore.config import Config

from sandbox.ec2_emulator import Ec2Emulator, Ec2World
from sandbox.faults import Dice, FaultProxy, FaultRates
from workers.ec2 import Ec2, Throttled, Transient


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
