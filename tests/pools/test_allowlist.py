"""The allowlist's shape (pools/allowlist.py): numeric order, the states, the weak ETag that leaves updatedAt out,
and If-None-Match's weak comparison."""

from __future__ import annotations

import datetime as dt

import pytest

from pools import allowlist

T0 = dt.datetime(2026, 12, 1, 12, 0, tzinfo=dt.UTC)


def _rows(seen: dt.datetime = T0) -> list[tuple[str, str, str, bool, dt.datetime | None]]:
    return [
        ("10.0.0.10", "eipalloc-b", "", False, seen),
        ("9.255.255.255", "eipalloc-c", "eipassoc-1", False, seen - dt.timedelta(minutes=1)),  # associated only
        ("10.0.0.9", "eipalloc-a", "", True, None),  # an open claim, not associated yet
        ("10.0.0.100", "eipalloc-d", "", False, seen - dt.timedelta(hours=1)),
    ]


def test_the_list_is_in_numeric_ip_order_with_each_state_and_the_newest_reading() -> None:
    listed = allowlist.build("egress", _rows())
    assert listed.ips == ["9.255.255.255", "10.0.0.9", "10.0.0.10", "10.0.0.100"]  # text order differs
    assert [e.state for e in listed.entries] == ["in-use", "in-use", "free", "free"]
    assert listed.updated_at == T0
    assert listed.text() == "9.255.255.255\n10.0.0.9\n10.0.0.10\n10.0.0.100\n"
    assert listed.as_api()["addresses"][0] == {"publicIp": "9.255.255.255", "allocationId": "eipalloc-c",
                                               "state": "in-use"}
    empty = allowlist.build("egress", [])
    assert (empty.ips, empty.text(), empty.updated_at) == ([], "", None)


def test_the_etag_is_weak_and_moves_with_the_list_not_with_the_reading_time() -> None:
    before = allowlist.build("egress", _rows())
    later = allowlist.build("egress", _rows(T0 + dt.timedelta(minutes=5)))
    assert before.as_api()["updatedAt"] != later.as_api()["updatedAt"]
    for fmt in allowlist.FORMATS:
        assert before.etag(fmt).startswith('W/"') and before.etag(fmt) == later.etag(fmt)
    assert before.etag("json") != before.etag("txt")
    # A state change: a new JSON body, the same text.
    freed = allowlist.build("egress", [(ip, a, "", False, s) for ip, a, _assoc, _claimed, s in _rows()])
    assert freed.etag("json") != before.etag("json") and freed.etag("txt") == before.etag("txt")
    # Another IP: both change.
    grown = allowlist.build("egress", [*_rows(), ("10.0.0.11", "eipalloc-e", "", False, T0)])
    assert grown.etag("json") != before.etag("json") and grown.etag("txt") != before.etag("txt")


@pytest.mark.parametrize("header, matches", [
    ('W/"abc"', True),
    ('"abc"', True),  # weak comparison: W/ set aside on both sides
    ('"zzz", W/"abc"', True),
    ('"x,y", "abc"', True),  # a comma inside a tag does not split it
    ("*", True),
    (' * ', True),
    ('"abcd"', False),
    ('W/"ab"', False),
    ("abc", False),  # not a quoted tag
    ("", False),
])
def test_if_none_match_compares_weakly(header: str, matches: bool) -> None:
    assert allowlist.etag_matches(header, 'W/"abc"') is matches
