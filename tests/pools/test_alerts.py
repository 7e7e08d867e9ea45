"""Alert keys: one vocabulary, so that an alert is named and coloured as what it is."""

from __future__ import annotations

import datetime as dt

import pytest

from pools.alerts import Alert, alert_key, alert_kind, alert_label, alerts_ended


@pytest.mark.parametrize(("key", "kind"), [
    ("pool_exhausted", "pool_exhausted"),
    ("read-failed", "error"),
    ("step-failed:assign:ip-10-0-1-1", "error"),
    ("node-no-ipv4:ip-10-0-1-1", "error"),
    ("node-foreign-eip:ip-10-0-1-1", "conflict"),
    ("eip-foreign:eipalloc-1", "conflict"),
    ("made-up-by-a-newer-version:x", "error"),
    ("pool_low", "pool_low"),
    ("egress-not-via-eip:ip-10-0-1-1", "egress_not_via_eip"),
])
def test_each_alert_has_the_badge_of_its_kind(key: str, kind: str) -> None:
    assert alert_kind(key) == kind


def test_every_alert_has_a_kind_and_a_label() -> None:
    for name in Alert:
        key = alert_key(name, "subject")
        assert alert_kind(key) in ("pool_exhausted", "pool_low", "egress_not_via_eip", "error", "conflict")
        assert alert_label(key) and "{}" not in alert_label(key)


def test_the_dashboard_names_a_failing_step_as_an_error() -> None:
    from pools.templatetags.eipdash import alert_kind as badge
    from pools.templatetags.eipdash import alert_label as label

    assert badge("step-failed:release:ip-10-0-1-1") == "error"
    assert label("step-failed:release:ip-10-0-1-1") == "error: a step keeps failing (release:ip-10-0-1-1)"


def test_alerts_ended_records_when_a_pass_no_longer_sees_an_alert() -> None:
    """The overview says when a resolved alert ended: the first pass that no longer saw it, kept an hour."""
    t0 = dt.datetime(2026, 12, 7, 2, 0, tzinfo=dt.UTC)
    ended = alerts_ended(["pool_exhausted", "eip-foreign:a"], ["eip-foreign:a"], {}, t0)
    assert ended == {"pool_exhausted": t0.isoformat()}
    later = t0 + dt.timedelta(minutes=5)
    assert alerts_ended(["eip-foreign:a"], ["eip-foreign:a"], ended, later) == ended  # kept as it was
    assert alerts_ended([], ["pool_exhausted"], ended, later) == {}  # true again: not ended
    assert alerts_ended([], [], ended, t0 + dt.timedelta(minutes=61)) == {}  # older than an hour: forgotten
