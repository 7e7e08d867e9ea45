"""The EC2 budget (workers/budget.py): buckets shared through Redis, paced in the EC2 adapter.

No timing is asserted: the buckets refill so slowly here (one token per 100 s) that what a test counts
cannot change while it runs.
"""

from __future__ import annotations

import contextvars
import os
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import pytest
from pytest_django.fixtures import Settings

from tests.fixtures.ec2 import ErrorServer
from tests.fixtures.polling import eventually
from workers import budget
from workers.ec2 import Ec2, OutOfTime

REGION = "us-east-1"
SLOW = 0.01  # tokens per second: none refills while a test runs
ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture
def tiny(settings: Settings) -> Settings:
    """A mutate bucket of 10 tokens (no headroom at this size) that does not refill during the test."""
    settings.EIPDASH_EC2_MUTATE_BURST, settings.EIPDASH_EC2_MUTATE_RATE = 10, SLOW
    return settings


def take_until_empty(region: str) -> int:
    """Tokens this caller got before the bucket ran dry (each wait gives up at once)."""
    got = 0
    while True:
        try:
            budget.acquire(region, budget.MUTATE, until=time.monotonic())
        except budget.OutOfTime:
            return got
        got += 1


def another_worker(line: str, redis_url: str) -> str:
    """What `line` prints in another process, with `b` the same Redis bucket as the `tiny` fixture's."""
    script = ("import sys; from workers.budget import RedisBucket, HOLD, GIVE_BACK, LOOK; "
              "b = RedisBucket(sys.argv[1], sys.argv[2], 10, 0.01); " + line)
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    out = subprocess.run([sys.executable, "-c", script, redis_url, budget.bucket_key(REGION, budget.MUTATE)],
                         capture_output=True, text=True, check=True, env=env, cwd=ROOT, timeout=60)
    return out.stdout.strip()


def raw_tokens(region: str, kind: str) -> float:
    return budget.bucket(region, kind).call(0).tokens


def test_threads_share_one_bucket_and_it_never_goes_negative(tiny: Settings) -> None:
    counts: list[int] = []
    threads = [threading.Thread(target=lambda: counts.append(take_until_empty(REGION))) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert sum(counts) == 10
    assert 0 <= raw_tokens(REGION, budget.MUTATE) < 1
    # The read bucket and other regions are their own.
    assert budget.available(REGION, budget.READ) >= 1
    assert budget.available("eu-west-1", budget.MUTATE) == 10  # a fresh bucket, looked at once


def test_processes_share_the_bucket_through_redis(tiny: Settings, redis_url: str) -> None:
    """Another process (another worker) spends from the same Redis bucket: this one gets the rest."""
    assert another_worker("print(sum(b.call(1).granted for _ in range(6)))", redis_url) == "6"
    assert take_until_empty(REGION) == 4


def test_without_redis_the_bucket_is_in_process(tiny: Settings) -> None:
    tiny.REDIS_URL = None
    assert isinstance(budget.bucket(REGION, budget.MUTATE), budget.LocalBucket)
    assert take_until_empty(REGION) == 10
    assert 0 <= raw_tokens(REGION, budget.MUTATE) < 1


def test_acquire_gives_up_at_the_deadline_and_takes_nothing(tiny: Settings) -> None:
    assert take_until_empty(REGION) == 10
    with budget.deadline(time.monotonic() + 0.5), pytest.raises(budget.OutOfTime):
        budget.acquire(REGION, budget.MUTATE)  # the next token is 100 s away: it does not even wait
    assert 0 <= raw_tokens(REGION, budget.MUTATE) < 1


def test_a_throttle_empties_the_shared_bucket(tiny: Settings) -> None:
    budget.acquire(REGION, budget.MUTATE)
    assert 9 <= budget.available(REGION, budget.MUTATE) < 10
    budget.throttled(REGION, budget.MUTATE)
    assert raw_tokens(REGION, budget.MUTATE) < 1
    assert take_until_empty(REGION) == 0


def test_a_large_bucket_keeps_headroom(settings: Settings) -> None:
    """Two of EC2's 50 tokens are never spent: a margin for the clocks of the mirror and of AWS."""
    settings.EIPDASH_EC2_MUTATE_BURST, settings.EIPDASH_EC2_MUTATE_RATE = 50, SLOW
    assert 48 <= budget.available(REGION, budget.MUTATE) < 49
    assert take_until_empty(REGION) == 48
    assert 2 <= raw_tokens(REGION, budget.MUTATE) < 3


def test_a_throttled_call_is_not_retried_past_the_deadline(
    tiny: Settings, ec2_emulator: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """AWS says RequestLimitExceeded: the shared bucket is emptied, and botocore's retry goes through it, so
    it waits for the refill (here: past the deadline, so it is never sent) instead of spending more of AWS's."""
    with ErrorServer(503, "RequestLimitExceeded") as server:
        monkeypatch.setenv("AWS_ENDPOINT_URL_EC2", server.url)
        ec2 = Ec2(REGION)
        with budget.deadline(time.monotonic() + 30), pytest.raises(OutOfTime):
            ec2.associate(allocation_id="eipalloc-1", eni_id="eni-1", private_ip="10.0.0.1")
    assert server.attempts == 1
    assert raw_tokens(REGION, budget.MUTATE) < 1


def test_describe_calls_read_and_the_others_mutate() -> None:
    assert budget.kind_of("DescribeAddresses") == budget.READ
    assert budget.kind_of("DescribeInstances") == budget.READ
    assert budget.kind_of("AssociateAddress") == budget.MUTATE
    assert budget.kind_of("DisassociateAddress") == budget.MUTATE


def test_every_ec2_request_takes_a_token(settings: Settings, ec2_emulator: Any) -> None:
    settings.EIPDASH_EC2_READ_BURST, settings.EIPDASH_EC2_READ_RATE = 5, SLOW
    ec2 = Ec2(REGION)
    for _ in range(5):
        ec2.list_all_addresses()
    with budget.deadline(time.monotonic() + 30), pytest.raises(OutOfTime):
        ec2.list_all_addresses()
    assert budget.available(REGION, budget.MUTATE) >= 1  # the writes' bucket is untouched


def test_a_reservation_takes_tokens_nobody_else_can_spend_and_gives_back_the_rest(tiny: Settings) -> None:
    """A slice's tokens are taken when it is sized: another worker sees only what is left. The calls made in
    its block spend the reservation first (in threads too); what it did not spend goes back to the bucket."""
    held = budget.reserve(REGION, budget.MUTATE, 6)
    assert held.count == 6
    assert int(budget.available(REGION, budget.MUTATE)) == 4  # what every other caller sees now
    with budget.spending(held):
        # As the pass's pool starts its threads: in a copy of the context (workers/pass_context.py).
        spent = threading.Thread(target=contextvars.copy_context().run, args=(budget.acquire, REGION, budget.MUTATE))
        spent.start()
        spent.join()
        budget.acquire(REGION, budget.MUTATE)
        budget.acquire(REGION, budget.READ)  # another kind: from its own bucket
        assert held.left == 4
        assert int(budget.available(REGION, budget.MUTATE)) == 4  # both calls spent the reservation
    assert held.left == 0
    assert int(budget.available(REGION, budget.MUTATE)) == 8  # its 4 unspent tokens are back
    budget.acquire(REGION, budget.MUTATE)  # outside the block: from the bucket
    assert int(budget.available(REGION, budget.MUTATE)) == 7


def test_reserve_takes_nothing_until_its_least_is_there(tiny: Settings) -> None:
    """No caller holds a few tokens while it waits for more: below `least`, nothing is held; near the deadline,
    it takes what there is; with none at all, OutOfTime."""
    budget.reserve(REGION, budget.MUTATE, 8)
    answer = budget.bucket(REGION, budget.MUTATE).call(budget.HOLD, 5, 3, hold_id="other")
    assert answer.granted == 0 and answer.wait > 0
    assert int(budget.available(REGION, budget.MUTATE)) == 2
    with budget.deadline(time.monotonic() + 1):  # 3 tokens are 100 s away: it takes the 2 there are
        assert budget.reserve(REGION, budget.MUTATE, 5, 3).count == 2
    with budget.deadline(time.monotonic() + 1), pytest.raises(budget.OutOfTime):
        budget.reserve(REGION, budget.MUTATE, 5, 3)
    assert 9 <= raw_tokens(REGION, budget.MUTATE) <= 10  # held, not taken: still in the bucket


def test_held_tokens_stay_in_the_bucket_until_their_calls_are_sent(settings: Settings) -> None:
    """AWS's bucket refills only once calls arrive: a held token is taken from the mirror when its call is about
    to be sent, not at the reservation, so the mirror's refill does not start before AWS's (a burst after a
    slice's look would meet RequestLimitExceeded)."""
    settings.EIPDASH_EC2_MUTATE_BURST, settings.EIPDASH_EC2_MUTATE_RATE = 50, SLOW
    held = budget.reserve(REGION, budget.MUTATE, 48)
    assert raw_tokens(REGION, budget.MUTATE) == 50  # full, as AWS's is: nothing has reached it
    assert budget.available(REGION, budget.MUTATE) == 0  # but nobody else may take the 48
    with budget.spending(held):
        budget.acquire(REGION, budget.MUTATE)
    assert 49 <= raw_tokens(REGION, budget.MUTATE) < 49.1
    assert 47 <= budget.available(REGION, budget.MUTATE) < 47.1  # the 47 unspent are free again


def test_a_hold_expires_by_itself(tiny: Settings, monkeypatch: pytest.MonkeyPatch) -> None:
    """A worker that died (or froze) holding tokens keeps them HOLD_SECONDS at most; when it wakes, its calls
    spend like any other."""
    monkeypatch.setattr(budget, "HOLD_SECONDS", 0.5)
    held = budget.reserve(REGION, budget.MUTATE, 6)
    assert int(budget.available(REGION, budget.MUTATE)) == 4
    eventually(lambda: int(budget.available(REGION, budget.MUTATE)) == 10, timeout=30, what="the hold expired")
    with budget.spending(held):
        budget.acquire(REGION, budget.MUTATE)
    assert int(budget.available(REGION, budget.MUTATE)) == 9


def test_a_reservation_is_shared_with_another_process_through_redis(tiny: Settings, redis_url: str) -> None:
    """Another worker's hold is this worker's bucket too, until it is given back."""
    granted, free = another_worker("print(b.call(HOLD, 7, 4, hold_id='w2').granted, b.call(LOOK).free)",
                                   redis_url).split()
    assert int(granted) == 7 and 3 <= float(free) < 4
    assert budget.reserve(REGION, budget.MUTATE, 10).count == 3
    budget.bucket(REGION, budget.MUTATE).call(budget.GIVE_BACK, hold_id="w2")
    assert int(budget.available(REGION, budget.MUTATE)) == 7  # ours still holds 3


def test_a_reservation_may_borrow_the_refill_to_come_and_nobody_else_spends_it(tiny: Settings) -> None:
    """An assign slice prepares while its last tokens refill: they are its own, each spent no sooner than the
    refill brings it, and every other caller waits until they are spent or given back."""
    assert take_until_empty(REGION) == 10
    held = budget.reserve(REGION, budget.MUTATE, 5, borrow_seconds=250)  # 0.01/s: 2.5 tokens come in 250 s
    assert held.count == 2
    assert -2.1 < budget.bucket(REGION, budget.MUTATE).call(budget.LOOK).free < -1.9
    with budget.spending(held), budget.deadline(time.monotonic() + 1), pytest.raises(budget.OutOfTime):
        budget.acquire(REGION, budget.MUTATE)  # its token is not there before the deadline: nothing spent
    assert held.left == 0  # given back at the block's end
    assert -0.1 < budget.bucket(REGION, budget.MUTATE).call(budget.LOOK).free < 0.1
    assert 0 <= raw_tokens(REGION, budget.MUTATE) < 0.1  # never below zero: only what AWS has is spent


def test_a_borrowed_token_is_spent_only_once_the_refill_brings_it(settings: Settings) -> None:
    settings.EIPDASH_EC2_MUTATE_BURST, settings.EIPDASH_EC2_MUTATE_RATE = 10, 20
    while budget.available(REGION, budget.MUTATE) >= 1:
        budget.acquire(REGION, budget.MUTATE)
    held = budget.reserve(REGION, budget.MUTATE, 3, borrow_seconds=0.1)
    assert 1 <= held.count <= 3
    with budget.spending(held):
        for _ in range(held.count):
            budget.acquire(REGION, budget.MUTATE)
            assert raw_tokens(REGION, budget.MUTATE) >= 0


def test_a_reservation_borrows_nothing_due_after_the_deadline(tiny: Settings) -> None:
    assert take_until_empty(REGION) == 10
    held = budget.reserve(REGION, budget.MUTATE, 5, borrow_seconds=1000, until=time.monotonic() + 150)
    assert held.count == 1  # 1.5 tokens come before it, not 10
