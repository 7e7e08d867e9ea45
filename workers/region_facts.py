"""The region's facts: the account's EIP quota and where each subnet's egress leaves (pools.models.RegionFacts).

Read at the end of a pass (workers/executor.py), at most once per region every EIPDASH_REGION_FACTS_SECONDS,
whichever worker, on whichever host, comes first. The turn is claimed with one conditional UPDATE (or the row's
INSERT) judged by the database's clock: the hosts' clocks may disagree, the database's is one for all, and
the row that UPDATE stamps can be stamped by one worker only. The quota and the egress map are then read
and stored with what went wrong: a quota read that failed stores its error and no value (the page says it could
not read: a quota is never guessed); an egress read that failed stores its error beside the last map read (the
subnets' routes rarely change, and dropping the map would end and restart every egress alert). A worker stopped
between the claim and the write leaves the last values, read again once the window has passed; one that wakes
after another worker's claim writes nothing.

Never raises: the pass's own work is done when this runs, and nothing here may turn it into a failure. The
reads take EC2 read tokens like any other (workers/budget.py), but wait for one a few seconds at most.
"""

from __future__ import annotations

import logging
import secrets
import time
from datetime import timedelta
from typing import Any

from django.conf import settings
from django.db import DatabaseError, IntegrityError, transaction
from django.db.models import DateTimeField, ExpressionWrapper, Q
from django.db.models.functions import Now

from pools.egress import egress_by_subnet
from pools.models import RegionFacts

from . import budget
from .ec2 import Ec2, Ec2Error

log = logging.getLogger(__name__)

# The longest the facts' reads wait for an EC2 read token: a budget that cannot spare four tokens in that
# long is spent on the passes, which matter more; the facts say they could not be read, and are read again
# at the next turn.
TOKEN_WAIT_SECONDS = 5.0


def refresh_region_facts(region: str, ec2: Ec2) -> None:
    """Read and store the region's quota and egress map, if it is this caller's turn. Never raises."""
    try:
        claimed = _claim(region)
        if claimed is None:
            return
        with budget.deadline(time.monotonic() + TOKEN_WAIT_SECONDS):
            found = {**_quota(ec2), **_egress(ec2)}
        with transaction.atomic():  # a savepoint: a failed statement must not poison a caller's transaction
            # Only while the row still carries this caller's claim: a worker that froze past the window (and
            # whose turn another worker has taken since) must not write its older reads over newer ones.
            RegionFacts.objects.filter(region=region, facts_claim=claimed).update(
                **found, quota_read_at=Now(), egress_read_at=Now())
    except Exception:  # the pass is done: whatever went wrong here is logged, never the pass's failure
        log.exception("%s: the region's EIP quota and egress paths were not refreshed", region)


def _claim(region: str) -> str | None:
    """This caller's claim token when it reads the region's facts now (they were never read, or longer ago than
    the window by the database's clock), else None. One row per region; the UPDATE that stamps it is the claim,
    and writes the token the caller's final write must still find there."""
    cutoff = ExpressionWrapper(Now() - timedelta(seconds=settings.EIPDASH_REGION_FACTS_SECONDS),
                               output_field=DateTimeField())
    facts = RegionFacts.objects.filter(region=region)
    token = secrets.token_hex(16)
    try:
        with transaction.atomic():
            # Fresh: the usual answer, and a read only (no write on every pass).
            if facts.filter(quota_read_at__gt=cutoff, egress_read_at__gt=cutoff).exists():
                return None
            due = Q(quota_read_at__isnull=True) | Q(quota_read_at__lte=cutoff) | Q(egress_read_at__isnull=True) \
                | Q(egress_read_at__lte=cutoff)
            if facts.filter(due).update(quota_read_at=Now(), egress_read_at=Now(), facts_claim=token):
                return token
            if facts.exists():
                return None  # another worker stamped it between the look and the UPDATE
        with transaction.atomic():
            RegionFacts.objects.create(region=region, quota_read_at=Now(), egress_read_at=Now(), facts_claim=token)
            return token
    except IntegrityError:
        return None  # another worker inserted the region's row first: its turn
    except DatabaseError as exc:
        log.warning("%s: the region's facts could not be claimed (%s); the next pass tries again", region, exc)
        return None



def _quota(ec2: Ec2) -> dict[str, Any]:
    try:
        limit, source = ec2.eip_quota()
    except Ec2Error as exc:
        log.warning("%s: the EIP quota could not be read: %s", ec2.region, exc)
        return {"eip_quota": None, "eip_quota_source": "", "quota_error": str(exc)[:2000]}
    return {"eip_quota": limit, "eip_quota_source": source, "quota_error": ""}


def _egress(ec2: Ec2) -> dict[str, Any]:
    try:
        subnets = ec2.describe_subnets()
        route_tables = ec2.describe_route_tables()
        nat_gateways = ec2.describe_nat_gateways()
    except Ec2Error as exc:
        # The last map read stays, with the error beside it: a throttled read must not end every node's
        # egress alert for one window and start it again at the next (a new event and Kubernetes Warning each).
        log.warning("%s: the subnets' egress paths could not be read: %s", ec2.region, exc)
        return {"egress_error": str(exc)[:2000]}
    return {"egress": egress_by_subnet(subnets, route_tables, nat_gateways), "egress_error": ""}
