"""The watch's enqueuer through a broker outage, step by step: capped exponential backoff, one warning per
outage, and every pass held during the outage sent once the broker is back. The broker here is a stand-in
that refuses a given number of publishes the way Celery reports a refused connection (kombu's
OperationalError); the real outage, with a real Redis stopped and restarted, is in test_watch_outage.py."""

from __future__ import annotations

import logging

import pytest
from kombu.exceptions import OperationalError

from workers.watch import Enqueuer


class FlakyBroker:
    def __init__(self, refusals: int) -> None:
        self.refusals = refusals
        self.sent: list[int] = []

    def publish(self, spec_id: int) -> None:
        if self.refusals > 0:
            self.refusals -= 1
            raise OperationalError("Error 111 connecting to 127.0.0.1:6379. Connection refused.")
        self.sent.append(spec_id)


def test_backoff_doubles_up_to_the_cap_and_the_outage_is_logged_once(caplog: pytest.LogCaptureFixture) -> None:
    broker = FlakyBroker(refusals=7)
    waits: list[float] = []
    heartbeats: list[None] = []
    enqueuer = Enqueuer(broker.publish, initial_backoff=0.5, max_backoff=4.0, sleep=waits.append,
                        heartbeat=lambda: heartbeats.append(None))
    with caplog.at_level(logging.INFO, logger="workers.watch"):
        assert enqueuer.send(7) is True
    assert waits == [0.5, 1.0, 2.0, 4.0, 4.0, 4.0, 4.0]
    assert broker.sent == [7]
    assert len(heartbeats) == len(waits), "the liveness heartbeat goes on through the outage"
    messages = [r.getMessage() for r in caplog.records]
    assert sum("broker unreachable" in m for m in messages) == 1
    assert sum("broker reachable again" in m for m in messages) == 1
    assert enqueuer.outages == 1 and enqueuer.outage_started is None


def test_a_deadline_ends_the_wait_and_keeps_the_pass_pending() -> None:
    broker = FlakyBroker(refusals=100)
    now = [0.0]

    def sleep(seconds: float) -> None:
        now[0] += seconds

    enqueuer = Enqueuer(broker.publish, max_backoff=2.0, sleep=sleep, clock=lambda: now[0])
    assert enqueuer.send(3, deadline=10.0) is False
    assert now[0] < 10.0 and enqueuer.pending == {3} and broker.sent == []
    # The broker comes back: the held pass goes out with the next one, each once.
    broker.refusals = 0
    assert enqueuer.send(4) is True
    assert sorted(broker.sent) == [3, 4] and enqueuer.pending == set()


def test_a_second_outage_is_a_new_episode(caplog: pytest.LogCaptureFixture) -> None:
    broker = FlakyBroker(refusals=2)
    enqueuer = Enqueuer(broker.publish, sleep=lambda _: None)
    with caplog.at_level(logging.WARNING, logger="workers.watch"):
        enqueuer.send(1)
        enqueuer.send(1)  # no outage: sent at once, nothing logged
        broker.refusals = 1
        enqueuer.send(1)
    assert broker.sent == [1, 1, 1]
    assert enqueuer.outages == 2
    assert sum("broker unreachable" in r.getMessage() for r in caplog.records) == 2
