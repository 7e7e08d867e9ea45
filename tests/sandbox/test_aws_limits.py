"""EC2's latency and rate limits in front of the real moto server (sandbox/aws_limits.py), seen through boto3
with botocore's retries off, so that every throttled call shows; and what moto ends up holding."""

from __future__ import annotations

import json
import subprocess
import sys
import threading
import time
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import boto3
import botocore.exceptions
import pytest
from botocore.config import Config

from sandbox.aws_limits import BucketSizes, LimitsProxy, TokenBucket, is_mutating, read_stats, region_of, reset_stats
from sandbox.ec2_emulator import Ec2Emulator, Ec2World
from sandbox.ports import free_port
from tests.fixtures.processes import as_a_background_job, interrupt, wait_for_line

ROOT = Path(__file__).resolve().parents[2]
# Buckets too small to refill within a test: 3 mutating and 4 non-mutating calls per action and region.
TINY = BucketSizes(mutating_tokens=3, mutating_refill_per_s=0.0001, non_mutating_tokens=4,
                   non_mutating_refill_per_s=0.0001)


def client(url: str, region: str = "us-east-1") -> Any:
    """One attempt per call: botocore does not retry, so a throttled call raises."""
    return boto3.client("ec2", region_name=region, endpoint_url=url, aws_access_key_id="testing",
                        aws_secret_access_key="testing",
                        config=Config(retries={"mode": "standard", "total_max_attempts": 1}))


@pytest.fixture
def limits_proxy(ec2_emulator: Ec2Emulator) -> Iterator[Callable[..., LimitsProxy]]:
    started: list[LimitsProxy] = []

    def start(**kwargs: Any) -> LimitsProxy:
        proxy = LimitsProxy(ec2_emulator.endpoint_url, **kwargs).start()
        started.append(proxy)
        return proxy

    yield start
    for proxy in started:
        proxy.stop()


def _code(error: botocore.exceptions.ClientError) -> tuple[str, int]:
    return error.response["Error"]["Code"], error.response["ResponseMetadata"]["HTTPStatusCode"]


# --- the buckets -------------------------------------------------------------------------------------


def test_a_mutating_action_is_throttled_once_its_bucket_is_empty(limits_proxy, ec2_world: Ec2World) -> None:
    proxy = limits_proxy(throttle=True, sizes=TINY)
    ec2 = client(proxy.url)

    allocated = [ec2.allocate_address(Domain="vpc")["AllocationId"] for _ in range(3)]
    with pytest.raises(botocore.exceptions.ClientError) as raised:
        ec2.allocate_address(Domain="vpc")

    assert _code(raised.value) == ("RequestLimitExceeded", 503)
    # The throttled call never reached moto: it holds the three addresses, no fourth.
    held = ec2_world.client.describe_addresses()["Addresses"]
    assert sorted(a["AllocationId"] for a in held) == sorted(allocated)
    stats = proxy.stats()
    assert stats["calls"] == {"AllocateAddress": 4} and stats["throttled"] == {"AllocateAddress": 1}
    assert stats["throttled_calls"] == 1


def test_each_action_and_region_has_its_own_bucket(limits_proxy, ec2_world: Ec2World) -> None:
    allocation_id, _ = ec2_world.allocate_eip({"pool": "a"})
    instance_id, eni_id, private_ip = ec2_world.launch_instance()
    proxy = limits_proxy(throttle=True, sizes=TINY)
    ec2 = client(proxy.url)
    for _ in range(3):
        ec2.create_tags(Resources=[allocation_id], Tags=[{"Key": "x", "Value": "y"}])
    with pytest.raises(botocore.exceptions.ClientError):
        ec2.create_tags(Resources=[allocation_id], Tags=[{"Key": "x", "Value": "y"}])

    # Another mutating action, a read, and the same action in another region still have their tokens.
    association_id = ec2.associate_address(AllocationId=allocation_id, NetworkInterfaceId=eni_id,
                                           PrivateIpAddress=private_ip, AllowReassociation=False)["AssociationId"]
    assert ec2.describe_addresses(AllocationIds=[allocation_id])["Addresses"][0]["AssociationId"] == association_id
    client(proxy.url, region="eu-west-1").create_tags(Resources=[allocation_id], Tags=[{"Key": "x", "Value": "y"}])

    assert proxy.stats()["throttled"] == {"CreateTags": 1}


def test_reads_have_the_larger_bucket(limits_proxy) -> None:
    proxy = limits_proxy(throttle=True, sizes=TINY)
    ec2 = client(proxy.url)

    for _ in range(4):
        ec2.describe_addresses()
    with pytest.raises(botocore.exceptions.ClientError) as raised:
        ec2.describe_addresses()

    assert _code(raised.value) == ("RequestLimitExceeded", 503)
    stats = proxy.stats()
    assert stats["calls"] == {"DescribeAddresses": 5} and stats["reads"] == 5 and stats["throttled_calls"] == 1


def test_reset_fills_the_buckets_and_zeroes_the_counters(limits_proxy) -> None:
    proxy = limits_proxy(throttle=True, sizes=TINY)
    ec2 = client(proxy.url)
    for _ in range(4):
        ec2.describe_addresses()
    with pytest.raises(botocore.exceptions.ClientError):
        ec2.describe_addresses()

    reset_stats(proxy.url)  # the HTTP endpoint a benchmark in another process uses

    assert read_stats(proxy.url)["calls_total"] == 0
    ec2.describe_addresses()
    assert read_stats(proxy.url)["calls"] == {"DescribeAddresses": 1}


def test_without_throttle_nothing_is_refused(limits_proxy) -> None:
    proxy = limits_proxy(sizes=TINY)
    ec2 = client(proxy.url)

    for _ in range(10):
        ec2.describe_addresses()

    assert proxy.stats()["throttled_calls"] == 0 and proxy.stats()["calls_total"] == 10


def test_eipdash_adapter_meets_the_throttle_as_throttled(limits_proxy, monkeypatch) -> None:
    """The product's own client (botocore's standard retries) gives up with its domain error."""
    from workers.ec2 import Ec2, Throttled

    proxy = limits_proxy(throttle=True, sizes=BucketSizes(non_mutating_tokens=1, non_mutating_refill_per_s=0.0001))
    monkeypatch.setenv("AWS_ENDPOINT_URL_EC2", proxy.url)
    Ec2("us-east-1").list_all_addresses()

    with pytest.raises(Throttled):
        Ec2("us-east-1").list_all_addresses()
    assert proxy.stats()["throttled_calls"] >= 1


def test_token_bucket_refills_continuously_up_to_its_size() -> None:
    now = [0.0]
    bucket = TokenBucket(2, 5, clock=lambda: now[0])

    assert [bucket.take() for _ in range(3)] == [True, True, False]
    now[0] += 0.1  # half a token
    assert not bucket.take()
    now[0] += 0.1  # one token
    assert bucket.take() and not bucket.take()
    now[0] += 100  # never more than its size
    assert [bucket.take() for _ in range(3)] == [True, True, False]


def test_categories_and_regions() -> None:
    assert not is_mutating("DescribeAddresses") and not is_mutating("DescribeInstances")
    assert is_mutating("AssociateAddress") and is_mutating("DisassociateAddress")
    assert is_mutating("AllocateAddress") and is_mutating("ReleaseAddress")
    assert region_of("AWS4-HMAC-SHA256 Credential=testing/20261127/eu-west-1/ec2/aws4_request, "
                     "SignedHeaders=host, Signature=0") == "eu-west-1"
    assert region_of(None) == "us-east-1"


# --- latency and concurrency ------------------------------------------------------------------------


def test_latency_holds_each_call_and_calls_run_concurrently(limits_proxy) -> None:
    proxy = limits_proxy(latency_ms=300)
    clients = [client(proxy.url) for _ in range(4)]
    for ec2 in clients:  # connect first, so that the calls below start together
        ec2.describe_addresses()
    proxy.reset()
    barrier = threading.Barrier(len(clients))
    durations: list[float] = []

    def call(ec2: Any) -> None:
        barrier.wait(timeout=30)
        started = time.monotonic()
        ec2.describe_addresses()
        durations.append(time.monotonic() - started)

    threads = [threading.Thread(target=call, args=(ec2,)) for ec2 in clients]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)

    # Each call waits out the latency (a lower bound, not a speed target); the proxy saw them overlap.
    assert len(durations) == 4 and min(durations) >= 0.3
    stats = proxy.stats()
    assert stats["calls"] == {"DescribeAddresses": 4} and stats["in_flight"] == 0
    assert stats["max_in_flight"] >= 2


# --- the emulator with its flags ----------------------------------------------------------------------


def test_emulator_with_limits_puts_the_proxy_in_front_of_moto() -> None:
    with Ec2Emulator(latency_ms=1, throttle=True, sizes=TINY) as emulator:
        assert emulator.limits is not None and emulator.direct_url != emulator.endpoint_url
        world = Ec2World(emulator.direct_url)  # building the world spends no tokens
        for _ in range(5):
            world.allocate_eip({"pool": "a"})
        ec2 = client(emulator.endpoint_url)
        assert len(ec2.describe_addresses()["Addresses"]) == 5
        assert emulator.limits.stats()["calls"] == {"DescribeAddresses": 1}

        emulator.reset()

        assert emulator.limits.stats()["calls_total"] == 0
        assert ec2.describe_addresses()["Addresses"] == []


def test_main_with_flags_serves_the_counters() -> None:
    port = free_port()
    process = subprocess.Popen(
        [sys.executable, "-m", "sandbox.ec2_emulator", "--port", str(port), "--latency-ms", "5", "--throttle"],
        cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True,
        preexec_fn=as_a_background_job,  # SIGINT must stop it even there
    )
    try:
        printed = wait_for_line(process, "AWS_ENDPOINT_URL_EC2=", timeout=60)
        url = f"http://127.0.0.1:{port}"
        client(url).describe_addresses()
        with urllib.request.urlopen(f"{url}/_limits/stats", timeout=10) as response:
            stats = json.loads(response.read())
        interrupt(process)
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
    assert f"AWS_ENDPOINT_URL_EC2={url}\n" in printed
    assert stats["calls"] == {"DescribeAddresses": 1} and stats["throttle"] is True and stats["latency_ms"] == 5
    assert process.returncode == 0
