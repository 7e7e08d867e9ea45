"""Every Redis key eipdash writes, spelled once. Kept under the `eipdash:` prefix, so that a shared Redis can
tell eipdash's keys apart (the Celery queues and the API throttle's cache have their own)."""

from __future__ import annotations

PREFIX = "eipdash:"


def lease(spec_id: int) -> str:
    """A spec's single-flight lease. The key the earlier long lock used, so that workers of both versions
    exclude each other during a rolling update."""
    return f"{PREFIX}spec:{spec_id}"


def renewals(spec_id: int) -> str:
    """When (on Redis's clock) each holder of the spec's lease last renewed it, by fencing number: a holder's
    calls end within one lease time of its last renewal, so a newer holder knows when they are all over."""
    return f"{PREFIX}spec:{spec_id}:renewed"


def rerun(spec_id: int) -> str:
    """A pass that found the spec busy asks its holder for one more pass."""
    return f"{PREFIX}spec:{spec_id}:rerun"


def beat_tick() -> str:
    """The beat's last reconcile_all tick that did its work (a gate on Redis's clock)."""
    return f"{PREFIX}beat:reconcile-all"


def rerun_pattern() -> str:
    return f"{PREFIX}spec:*:rerun"


BUDGET_PREFIX = f"{PREFIX}ec2-budget:"


def budget(region: str, kind: str) -> str:
    """The EC2 token bucket of one region and kind (mutate, read)."""
    return f"{BUDGET_PREFIX}{region}:{kind}"


def reading(region_key: str) -> str:
    """The region's shared DescribeAddresses reading."""
    return f"{PREFIX}addresses:{region_key}"


def reading_seq(region_key: str) -> str:
    """The region sequence number the shared reading was taken at (beside it: a few bytes to compare)."""
    return f"{PREFIX}addresses-seq:{region_key}"


def reading_flight(region_key: str) -> str:
    """Single flight: a pass of the region is reading right now."""
    return f"{PREFIX}addresses-reading:{region_key}"
