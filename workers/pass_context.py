"""What every step of one pass shares: the spec, the clients, the lease and its fencing number, the deadline,
the report, and the rows the steps read and write.

The steps (workers/steps/) are functions of this context. Three rules hold for all of them:
- the database is only touched from the pass's own thread, and every write goes through `fenced()`: it lands
  only while this pass's fencing number is the spec's latest (pools/locks.py);
- the AWS and Kubernetes calls may run in the bounded pool (`concurrently`); every attempt to change AWS is
  guarded (`send_guard`), and every Kubernetes write carries `fence`;
- every change to AWS runs inside `aws_change()`, which bumps the region's sequence right before and right
  after it, and makes the later number the first one a reading must carry to serve the spec; so does the end
  of every pass: readings are ordered by that sequence, never by clocks (workers/readings.py).
"""

from __future__ import annotations

import contextvars
import logging
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Generic, TypeVar

from django.conf import settings
from django.db import transaction

from pools import services
from pools.alerts import Alert, alert_key
from pools.counters import row_ensure
from pools.locks import Lease, LeaseLost
from pools.logs import log_fields
from pools.models import SYSTEM_ACTOR, ElasticIP, Event, LaunchSpec, Node, SpecFence
from pools.planner import Plan
from pools.vocabulary import DEAD_STATES

from .ec2 import Ec2, Ec2Error
from .kube import Fence, Kube, KubeError
from .observe import error_text

log = logging.getLogger(__name__)

# Work already under way at the deadline (an association's confirmation, a re-taint) may wait this much
# longer for an EC2 token: finishing it beats leaving it half-done. EIPDASH_PASS_SECONDS stays at least 10 s
# under the Celery soft limit, so this never reaches it.
FINISH_GRACE_SECONDS = 5.0

_I = TypeVar("_I")
_R = TypeVar("_R")


@dataclass
class Outcome(Generic[_I, _R]):
    """One item's result from the pool: its value, or the AWS / Kubernetes error it raised."""

    item: _I
    value: _R | None = None
    error: Exception | None = None  # an Ec2Error, KubeError or LeaseLost from the pool; a DatabaseError


@dataclass
class PassReport:
    spec: str
    plan: Plan | None = None
    done: list[str] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)
    skipped: str = ""  # why the pass did not run (another worker holds the spec)
    read_failed: bool = False  # the pass stopped because AWS or Kubernetes could not be read
    left: list[str] = field(default_factory=list)  # steps not started: the pass reached its deadline
    # Nothing changed since the last pass that had nothing to do: no snapshot written, no plan (observe.Quiet).
    quiet: bool = False

    def lines(self) -> list[str]:
        if self.skipped:
            return [f"{self.spec}: skipped ({self.skipped})"]
        if self.quiet:
            return [f"{self.spec}: nothing changed since the last pass: nothing to do"]
        body = self.done or ["nothing to do"]
        return [f"{self.spec}: {line}" for line in body + [f"ERROR {e}" for e in self.errors]]


class PassContext:
    def __init__(self, spec: LaunchSpec, ec2: Ec2, kube: Kube, *, actor: str = SYSTEM_ACTOR,
                 lease: Lease | None = None, deadline: float | None = None) -> None:
        self.spec = spec
        self.ec2 = ec2
        self.kube = kube
        self.actor = actor
        self.lease = lease
        # The fencing number every Kubernetes write of this pass carries (None: no lease, a dry run's world).
        self.fence = Fence(spec.pk, lease.fence) if lease is not None and lease.fence else None
        self.report = PassReport(spec=spec.name)
        # time.monotonic() after which no new step starts (None: no deadline). The Celery soft limit cannot
        # stop a pass (botocore retries the exception it raises), so the pass stops itself between steps.
        self.deadline = deadline
        self.started_a_step = False
        # Only the rows the plan names: a cluster keeps a row per deleted node for its history, and loading
        # them all made a steady pass slow down with every one.
        self.nodes: dict[str, Node] = {}
        self.eips: dict[str, ElasticIP] = {}
        # The alerts true before this pass: a step that failed in the last pass too is the same episode.
        self.active_alerts = frozenset(
            LaunchSpec.objects.filter(pk=spec.pk).values_list("active_alerts", flat=True).first() or [])
        self.step_alerts: set[str] = set()
        # Node states from what happened, where that differs from the plan (a failed step).
        self.outcomes: dict[str, str] = {}
        self._pool: ThreadPoolExecutor | None = None
        self._fenced_depth = 0

    # --- the rows ---------------------------------------------------------------------------------------

    def node(self, name: str) -> Node:
        if name not in self.nodes:
            self.load_nodes([name])
        return self.nodes[name]

    def load_nodes(self, names: Iterable[str]) -> None:
        wanted = set(names) - self.nodes.keys()
        if wanted:
            rows = Node.objects.filter(cluster=self.spec.cluster, name__in=wanted).select_related("cluster")
            self.nodes.update((row.name, row) for row in rows)

    def load_eips(self, allocation_ids: Iterable[str]) -> None:
        wanted = set(allocation_ids) - self.eips.keys()
        if wanted:
            self.eips.update((row.allocation_id, row) for row in ElasticIP.objects.filter(allocation_id__in=wanted))

    def eip(self, allocation_id: str) -> ElasticIP:
        """The EIP's row, for its id and the events' context."""
        self.load_eips([allocation_id])
        return self.eips[allocation_id]

    def incarnation(self, name: str) -> str | None:
        """The instance this pass observed behind the node name: every Kubernetes write for the node is
        refused (kube.Replaced) if the name belongs to another instance by the time it lands."""
        self.load_nodes([name])
        row = self.nodes.get(name)
        return (row.instance_id or None) if row is not None else None

    def holding_state(self, name: str) -> str:
        """The state of a node whose release did not happen: it still holds its EIP."""
        self.load_nodes([name])
        node = self.nodes.get(name)
        if node is None or node.deleted_at is not None or node.instance_state in DEAD_STATES:
            return ""  # gone either way: the plan's state stands
        return Node.State.DRAINING if node.draining else Node.State.READY

    def keep_holding(self, name: str) -> None:
        if state := self.holding_state(name):
            self.outcomes[name] = state

    def tainted(self, name: str) -> None:
        with self.fenced():
            Node.objects.filter(cluster=self.spec.cluster, name=name).update(startup_tainted=True)
        if name in self.nodes:
            self.nodes[name].startup_tainted = True  # an assignment later in this pass lifts it again

    # --- fencing ----------------------------------------------------------------------------------------

    def check(self) -> None:
        """Between steps: stop (LeaseLost) once the lease is lost."""
        if self.lease is not None:
            self.lease.check()

    def send_guard(self, needed: float) -> None:
        """Right before each attempt to change AWS (workers/ec2.py): the lease holds for `needed` more seconds."""
        if self.lease is not None:
            self.lease.check(needed)

    @contextmanager
    def fenced(self) -> Iterator[None]:
        """A transaction whose writes land only while this pass holds the spec's latest fencing number. Inside
        another fenced block it is a savepoint of that transaction, already fenced."""
        if self.lease is None or self._fenced_depth:
            with transaction.atomic():
                yield
            return
        with self.lease.fenced():
            self._fenced_depth += 1
            try:
                yield
            finally:
                self._fenced_depth -= 1

    @contextmanager
    def aws_change(self) -> Iterator[None]:
        """Around every change to AWS: the region's sequence is bumped right before and right after it, and
        the spec remembers the later number, so that only a reading taken after the change serves the spec
        (workers/readings.py). The bumps commit at once: they must not be hidden in an open transaction."""
        self.fresh_from_here()
        try:
            yield
        finally:
            self.fresh_from_here()

    def fresh_from_here(self) -> None:
        """Bump the region's sequence and make the spec's readings start there: after each change to AWS, and
        at the end of each pass (a shared reading then shows the spec's last change and is no older than its
        last pass)."""
        self._note_change(services.region_seq_bump(region=self.ec2.region))

    def _note_change(self, seq: int) -> None:
        with self.fenced():
            behind = SpecFence.objects.filter(spec_id=self.spec.pk, fresh_from_seq__lt=seq)
            if not behind.update(fresh_from_seq=seq):
                # Already as new, or no row yet: it is missing until a lease first fences the spec, and passes
                # run without Redis hold no lease, so two of them may create it side by side.
                row_ensure(SpecFence, key={"spec_id": self.spec.pk})
                behind.update(fresh_from_seq=seq)

    # --- the record and the report ----------------------------------------------------------------------

    def context(self, *, node: Node | None = None, eip: ElasticIP | None = None) -> services.EventContext:
        return services.event_context(spec=self.spec, node=node, eip=eip)

    def record(self, kind: str, reason: str, *, node: Node | None = None, eip: ElasticIP | None = None,
               actor: str | None = None) -> None:
        with self.fenced():
            services.event_record(kind=kind, context=self.context(node=node, eip=eip), reason=reason,
                                  actor=actor or self.actor)

    def failed(self, what: str, exc: Exception, *, node: str = "", allocation_id: str = "", kind: str = "",
               failed_state: str = "") -> None:
        """A step (or one item of a slice) failed: in the report, and one `error` event per episode."""
        message = error_text(what, exc)
        self.report.errors.append(message)
        if failed_state and node:
            self.outcomes[node] = failed_state
        # One event per episode: a node that keeps failing must not write one event every pass.
        key = alert_key(Alert.STEP_FAILED, f"{kind or what}:{node or allocation_id}")
        self.step_alerts.add(key)
        if key not in self.active_alerts:
            node_row = self.nodes.get(node)
            eip_row = ElasticIP.objects.filter(allocation_id=allocation_id).first() if allocation_id else None
            self.record(Event.Kind.ERROR, message, node=node_row, eip=eip_row)
        log.warning("%s", message, extra=log_fields(spec=self.spec.name, node=node, allocation_id=allocation_id))

    def leave(self, what: str, *, why: str = "", node: str = "", failed_state: str = "") -> None:
        """A step not done in this pass (its deadline, or a call not sent in time: `why`): its node stays as it
        is, for the next pass."""
        self.report.left.append(f"{what} ({why})" if why else what)
        if failed_state and node:
            self.outcomes[node] = failed_state

    # --- time ---------------------------------------------------------------------------------------------

    def out_of_time(self) -> bool:
        """Past the deadline, once some step ran (the pass's first step always runs)."""
        return self.started_a_step and self.deadline is not None and time.monotonic() >= self.deadline

    def grace_deadline(self) -> float | None:
        return None if self.deadline is None else self.deadline + FINISH_GRACE_SECONDS

    # --- the pool -----------------------------------------------------------------------------------------

    def concurrently(self, fn: Callable[[_I], _R], items: Sequence[_I]) -> list[Outcome[_I, _R]]:
        """fn(item) for every item in the pass's bounded pool, in order. Only AWS and Kubernetes calls go
        in fn (never the database: that stays in this thread); their errors (and a lost lease) come back per
        item, anything else is raised here. Each thread runs in this thread's context, so the EC2 calls keep
        its deadline and its send guard."""
        if len(items) <= 1:
            return [_outcome(fn, item) for item in items]
        return [future.result() for future in [self.submit(fn, item) for item in items]]

    def submit(self, fn: Callable[[_I], _R], item: _I) -> Future[Outcome[_I, _R]]:
        """fn(item) in the pass's pool, under the same rules as `concurrently`: for steps that go on with each
        item as soon as its own call ends (concurrent.futures.wait), not when the slowest of them does."""
        if self._pool is None:
            self._pool = ThreadPoolExecutor(max_workers=settings.EIPDASH_STEP_CONCURRENCY,
                                            thread_name_prefix=f"pass-{self.spec.pk}")
        return self._pool.submit(contextvars.copy_context().run, _outcome, fn, item)

    def close(self) -> None:
        if self._pool is not None:
            self._pool.shutdown(wait=True)
            self._pool = None


def _outcome(fn: Callable[[_I], _R], item: _I) -> Outcome[_I, _R]:
    try:
        return Outcome(item, value=fn(item))
    except (Ec2Error, KubeError, LeaseLost) as exc:
        return Outcome(item, error=exc)
