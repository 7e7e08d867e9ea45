"""The EC2 adapter: the only module of eipdash that imports boto3 / botocore.

The endpoint and credentials are resolved the standard boto3 way (``AWS_ENDPOINT_URL_EC2``, the credential
chain), so the same code talks to AWS and to the sandbox's moto server. SDK errors leave this module only as
the domain errors below.

Every HTTP request to EC2 (each attempt: botocore's retries included, each page of a paginated read) first
takes a token from the account's shared EC2 budget (workers/budget.py): Describe* from the read bucket,
the rest from the mutate bucket. A RequestLimitExceeded answer empties the shared bucket, so the retry (and
every other worker's next call) waits for the refill instead of spending more of AWS's. A wait that would
pass the running pass's deadline gives up before sending: OutOfTime.

Fencing (pools/locks.py): every attempt to change AWS calls the running pass's send guard (`guarded()`) right
before it is sent, after its token: the guard proves the pass still holds its spec's lease, and will for the
longest the attempt can take (WRITE_ATTEMPT_SECONDS: the writing client's connect and read timeouts), or
stops it unsent. An error that came after an attempt may have reached AWS (a timeout, a 5xx, a guard or
deadline stop on a retry) says so: `maybe_landed`, and the caller must not take the change for undone.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import re
import threading
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass, field
from functools import cached_property, partial
from typing import Any, NamedTuple, TypeVar

import botocore.exceptions
import botocore.loaders
import botocore.parsers
import botocore.session
from botocore.config import Config
from django.conf import settings

from pools import metrics
from pools.locks import LeaseLost

from . import budget

_CLIENT_CONFIG = Config(
    retries={"mode": "standard", "max_attempts": 3},
    connect_timeout=5,
    read_timeout=10,
)
# The client that changes AWS answers in seconds, or the attempt is over: a pass sends an attempt only while
# its lease holds for at least WRITE_ATTEMPT_SECONDS more (its timeouts, plus a second for the rest), so that
# no attempt of a pass can still be on its way once another pass holds the spec.
WRITE_CONNECT_SECONDS = 2
WRITE_READ_SECONDS = 4
WRITE_ATTEMPT_SECONDS = WRITE_CONNECT_SECONDS + WRITE_READ_SECONDS + 1
_WRITE_CONFIG = Config(
    retries={"mode": "standard", "max_attempts": 3},
    connect_timeout=WRITE_CONNECT_SECONDS,
    read_timeout=WRITE_READ_SECONDS,
)

# AWS refuses more than 200 values across the filters of one call (FilterLimitExceeded).
FILTER_VALUES_LIMIT = 200
# The largest page DescribeInstances serves.
INSTANCES_PAGE_SIZE = 1000

_THROTTLING_CODES = frozenset(
    {
        "RequestLimitExceeded",
        "Throttling",
        "ThrottlingException",
        "ThrottledException",
        "RequestThrottled",
        "RequestThrottledException",
        "TooManyRequestsException",
        "SlowDown",
    }
)
_TRANSIENT_CODES = frozenset(
    {"InternalError", "InternalFailure", "ServiceUnavailable", "Unavailable", "RequestTimeout"}
)


class Ec2Error(Exception):
    """An EC2 call failed; ``code`` is the AWS error code (or the botocore exception name).

    maybe_landed: a change (AssociateAddress, DisassociateAddress) whose attempt may have reached AWS and
    been carried out although the answer was an error (a timeout, a 5xx): the change is not known undone."""

    def __init__(self, message: str, *, code: str = "", operation: str = "", maybe_landed: bool = False) -> None:
        super().__init__(message)
        self.code = code
        self.operation = operation
        self.maybe_landed = maybe_landed


class Throttled(Ec2Error):
    """The API rate limit was hit even after botocore's retries: try again on a later pass."""


class AlreadyAssociated(Ec2Error):
    """The EIP is on another ENI and AllowReassociation=False kept it there."""


class NotFound(Ec2Error):
    """The allocation, association, instance or ENI does not exist (any more)."""


class Transient(Ec2Error):
    """A 5xx, a timeout or a broken connection: safe to retry later."""


class Permanent(Ec2Error):
    """Anything else (UnauthorizedOperation, InvalidParameterValue...): retrying will not help."""


class OutOfTime(Transient):
    """The EC2 budget had no token before the pass deadline: the call was never sent (the next pass does it)."""


class Unsure(Transient):
    """A change stopped before a retry (its deadline, or its lease), after an earlier attempt that may have
    landed: nobody knows whether AWS carried it out."""


def error_class_for(code: str, http_status: int | None = None) -> type[Ec2Error]:
    """The domain error for an AWS error code: a pure function, so the mapping is testable on its own."""
    if code in _THROTTLING_CODES:
        return Throttled
    if code == "Resource.AlreadyAssociated":
        return AlreadyAssociated
    if code.endswith(".NotFound") or code.endswith("NotFound"):
        return NotFound
    if code in _TRANSIENT_CODES or (http_status is not None and http_status >= 500):
        return Transient
    return Permanent


def to_domain_error(exc: Exception, operation: str = "") -> Ec2Error:
    """Turn a botocore exception into the matching domain error."""
    if isinstance(exc, botocore.exceptions.ClientError):
        error = exc.response.get("Error", {})
        code = str(error.get("Code", ""))
        status = exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode")
        message = str(error.get("Message", "")) or str(exc)
        return error_class_for(code, status)(f"{operation}: {code}: {message}", code=code, operation=operation)
    transient = (
        botocore.exceptions.ConnectionError,  # includes EndpointConnectionError and the timeouts
        botocore.exceptions.HTTPClientError,
    )
    cls: type[Ec2Error] = Transient if isinstance(exc, transient) else Permanent
    return cls(f"{operation}: {exc}", code=type(exc).__name__, operation=operation)


# The running pass's send guard: called right before each attempt to change AWS with the longest that attempt
# can take; it raises (LeaseLost) to stop the attempt unsent. Threads started with copy_context() inherit it.
_send_guard: ContextVar[Callable[[float], None] | None] = ContextVar("eipdash_ec2_send_guard", default=None)


@contextmanager
def guarded(check: Callable[[float], None] | None) -> Iterator[None]:
    token = _send_guard.set(check)
    try:
        yield
    finally:
        _send_guard.reset(token)


@dataclass
class _Call:
    """One API call in this thread: whether one of its attempts may have reached AWS and been carried out."""

    maybe_landed: bool = False


_call: ContextVar[_Call | None] = ContextVar("eipdash_ec2_call", default=None)
# Errors that prove the attempt never reached AWS.
_NOT_SENT = (budget.OutOfTime, LeaseLost, botocore.exceptions.ConnectTimeoutError,
             botocore.exceptions.EndpointConnectionError)


@contextmanager
def _mapped(operation: str) -> Iterator[None]:
    """Map SDK errors to the domain's, and count the call (eipdash_aws_calls_total) by its outcome."""
    call = _Call()
    token = _call.set(call)
    try:
        yield
    except (botocore.exceptions.ClientError, botocore.exceptions.BotoCoreError) as exc:
        error = to_domain_error(exc, operation)
        error.maybe_landed = call.maybe_landed
        metrics.AWS_CALLS.labels(operation, type(error).__name__.lower()).inc()
        raise error from exc
    except (budget.OutOfTime, LeaseLost) as exc:
        # Stopped before an attempt was sent. If an earlier attempt may have landed, the change is unsure.
        if call.maybe_landed:
            raise Unsure(f"{operation}: stopped before a retry, after an attempt that may have landed: {exc}",
                         code="Unsure", operation=operation, maybe_landed=True) from exc
        if isinstance(exc, LeaseLost):
            raise
        # Not a call: nothing reached AWS, so it is not counted either.
        raise OutOfTime(f"{operation}: not sent: {exc}", code="OutOfTime", operation=operation) from exc
    finally:
        _call.reset(token)
    metrics.AWS_CALLS.labels(operation, "ok").inc()


def _pace(event_name: str = "", region: str = "", **_: Any) -> None:
    """before-send (each attempt): take a token of the call's bucket, waiting up to the pass deadline; then,
    for a change, the pass's send guard, last, right before the attempt goes out."""
    operation = event_name.rsplit(".", 1)[-1]
    kind = budget.kind_of(operation)
    budget.acquire(region, kind)
    guard = _send_guard.get()
    if kind == budget.MUTATE and guard is not None:
        guard(WRITE_ATTEMPT_SECONDS)


def _note_answer(region: str, response: Any = None, operation: Any = None, caught_exception: Any = None,
                 **_: Any) -> None:
    """needs-retry (each answer): AWS's bucket is empty, so ours is too; and whether a change may have landed.
    Returns None: botocore decides whether to retry, and its retry takes a token like any call."""
    if operation is None:
        return
    kind = budget.kind_of(operation.name)
    call = _call.get()
    if caught_exception is not None:
        if call is not None and kind == budget.MUTATE and not isinstance(caught_exception, _NOT_SENT):
            call.maybe_landed = True  # a read timeout, a reset connection: AWS may have carried it out
        return
    if not response:
        return
    code = str((response[1] or {}).get("Error", {}).get("Code", ""))
    if code in _THROTTLING_CODES:
        budget.throttled(region, kind)
    elif call is not None and kind == budget.MUTATE and int(response[0].status_code) >= 500:
        call.maybe_landed = True  # a 5xx may come after the change was made


def paced(client: Any) -> Any:
    """Hook the EC2 budget into a client's every request (idempotent: once per client)."""
    region = client.meta.region_name or ""
    events = client.meta.events
    events.register("before-send.ec2", partial(_pace, region=region), unique_id="eipdash-ec2-budget")
    events.register("needs-retry.ec2", partial(_note_answer, region), unique_id="eipdash-ec2-throttle")
    return client


@dataclass(frozen=True)
class Address:
    allocation_id: str
    public_ip: str
    tags: dict[str, str] = field(hash=False)
    association_id: str | None
    eni_id: str | None
    private_ip: str | None
    # As AWS reports it; moto leaves it empty after an association by ENI, so never key on it.
    instance_id: str | None
    # "amazon", or the id of a BYOIP pool (which costs nothing per hour); "" where AWS did not say.
    public_ipv4_pool: str = ""

    @cached_property
    def observed(self) -> str:
        """The whole address as one text: a reading's digest is made of these (workers/observe.py)."""
        return json.dumps([self.allocation_id, self.public_ip, self.tags, self.association_id, self.eni_id,
                           self.private_ip, self.instance_id, self.public_ipv4_pool],
                          separators=(",", ":"), sort_keys=True)

    @classmethod
    def from_aws(cls, raw: dict[str, Any]) -> Address | None:
        """None for an address eipdash cannot pool: without a PublicIp (a carrier IP of a Wavelength
        zone, a customer-owned IP) or without an AllocationId (EC2-Classic)."""
        if not raw.get("PublicIp") or not raw.get("AllocationId"):
            return None
        return cls(
            allocation_id=raw["AllocationId"],
            public_ip=raw["PublicIp"],
            tags={t["Key"]: t.get("Value", "") for t in raw.get("Tags", [])},
            association_id=raw.get("AssociationId") or None,
            eni_id=raw.get("NetworkInterfaceId") or None,
            private_ip=raw.get("PrivateIpAddress") or None,
            instance_id=raw.get("InstanceId") or None,
            public_ipv4_pool=raw.get("PublicIpv4Pool") or "",
        )


@dataclass(frozen=True)
class Instance:
    instance_id: str
    state: str  # pending | running | stopping | stopped | shutting-down | terminated
    az: str
    # Primary ENI: attached at DeviceIndex 0 of network card 0. Instances with several network cards
    # have a DeviceIndex 0 on each card; only card 0's is the instance's own address.
    eni_id: str | None
    private_ip: str | None  # that ENI's primary private IP
    # Its subnet: the route table of that subnet says where its egress leaves (pools/egress.py).
    subnet_id: str = ""

    @classmethod
    def from_aws(cls, raw: dict[str, Any]) -> Instance:
        primary = next((eni for eni in raw.get("NetworkInterfaces", []) if _is_primary(eni)), None)
        private_ip = None
        if primary is not None:
            private_ip = next(
                (ip["PrivateIpAddress"] for ip in primary.get("PrivateIpAddresses", []) if ip.get("Primary")),
                primary.get("PrivateIpAddress") or None,
            )
        return cls(
            instance_id=raw["InstanceId"],
            state=raw.get("State", {}).get("Name", ""),
            az=raw.get("Placement", {}).get("AvailabilityZone", ""),
            eni_id=primary["NetworkInterfaceId"] if primary else None,
            private_ip=private_ip,
            subnet_id=raw.get("SubnetId") or "",
        )


def _is_primary(eni: dict[str, Any]) -> bool:
    attachment = eni.get("Attachment") or {}
    # NetworkCardIndex is absent on single-card instances (and in moto): that is card 0.
    return attachment.get("DeviceIndex") == 0 and (attachment.get("NetworkCardIndex") or 0) == 0


# The service models every client of this process reads, through one loader that keeps what it read: EC2's
# parses into about 50,000 objects in a fifth of a second, and a Session of each client's own would read it
# again (two clients per region: reads and writes).
_models = botocore.loaders.create_loader()


def _new_client(service: str, region: str, config: Config) -> Any:
    """A client from a Session of its own (creating clients from one shared Session at once is not safe), with
    the endpoint, credentials and retries resolved the standard boto3 way, the process's one loader, and its
    own memory of the last DescribeAddresses answer (_Parsers)."""
    session = botocore.session.get_session()
    session.register_component("data_loader", _models)
    session.register_component("response_parser_factory", _Parsers())
    return session.create_client(service, region_name=region, config=config)


# A request id in an EC2 answer: the one part of two otherwise equal answers that always differs.
_REQUEST_ID = re.compile(rb"<requestId>([^<]*)</requestId>")


class _Parsers(botocore.parsers.ResponseParserFactory):
    """botocore's parsers, but a DescribeAddresses answer equal to the client's last one, byte for byte once its
    request id is left out, is not parsed again: the last parse is handed out with this answer's own metadata.

    A steady pass reads the region's whole address list and, most of the time, nothing in it changed; parsing
    its XML costs about 0.2 ms an address (a second of CPU a pass at 5,000 addresses), hashing it a few
    milliseconds. Any change in AWS (a tag, an association made by anyone, an address allocated or released)
    changes the bytes and is parsed as usual."""

    def __init__(self) -> None:
        super().__init__()
        self.lock = threading.Lock()
        self.last: tuple[bytes, dict[str, Any]] | None = None  # (digest, parse) of the last DescribeAddresses

    def create_parser(self, protocol_name: str) -> Any:
        parser = super().create_parser(protocol_name)
        return _AddressesOnce(self, parser) if protocol_name == "ec2" else parser


class _AddressesOnce:
    def __init__(self, parsers: _Parsers, parser: Any) -> None:
        self.parsers, self.parser = parsers, parser

    def parse(self, response: dict[str, Any], shape: Any) -> Any:
        if getattr(shape, "name", "") != "DescribeAddressesResult" or response["status_code"] != 200:
            return self.parser.parse(response, shape)
        body: bytes = response["body"]
        digest = hashlib.sha256(_REQUEST_ID.sub(b"", body)).digest()
        with self.parsers.lock:
            last = self.parsers.last
        if last is not None and last[0] == digest:
            request_id = _REQUEST_ID.search(body)
            metadata = {"RequestId": request_id.group(1).decode() if request_id else "",
                        "HTTPStatusCode": response["status_code"], "HTTPHeaders": response["headers"]}
            return {**last[1], "ResponseMetadata": metadata}
        parsed = self.parser.parse(response, shape)
        with self.parsers.lock:
            self.parsers.last = (digest, {key: value for key, value in parsed.items() if key != "ResponseMetadata"})
        # botocore adds to the metadata of what it is given (its retries): never the one kept.
        return {**parsed, "ResponseMetadata": dict(parsed.get("ResponseMetadata") or {})}


# Client creation costs tens of milliseconds and clients are thread-safe: share one per region.
# The key also holds the endpoint variables so a process that changes them (tests) gets a fresh client.
_clients: dict[tuple[str, str | None, str | None, bool], Any] = {}
_clients_lock = threading.Lock()


def _client_for(region: str, *, write: bool = False) -> Any:
    key = (region, os.environ.get("AWS_ENDPOINT_URL_EC2"), os.environ.get("AWS_ENDPOINT_URL"), write)
    with _clients_lock:
        client = _clients.get(key)
        if client is None:
            # One connection per concurrent step (apply.py), or botocore opens and drops extra ones.
            pool = Config(max_pool_connections=max(10, settings.EIPDASH_STEP_CONCURRENCY + 2))
            config = (_WRITE_CONFIG if write else _CLIENT_CONFIG).merge(pool)
            client = _new_client("ec2", region, config)
            _clients[key] = client
        return client


_T = TypeVar("_T")


def _addresses(response: dict[str, Any]) -> list[Address]:
    """The addresses of a DescribeAddresses response that eipdash can pool; the others are skipped,
    never a reason to fail the whole region's pass. An answer _Parsers did not parse again (the same list
    object) gives the Address objects it gave last time, in a new list."""
    raw: list[dict[str, Any]] = response.get("Addresses", [])
    with _converted_lock:
        kept = _converted.get(id(raw))
    if kept is not None and kept[0] is raw:
        return list(kept[1])
    addresses = [address for address in map(Address.from_aws, raw) if address is not None]
    with _converted_lock:
        # A few clients' worth (regions, endpoints); the raw list is held, so its id is never reused meanwhile.
        while len(_converted) >= 8:
            del _converted[next(iter(_converted))]
        _converted[id(raw)] = (raw, addresses)
    return list(addresses)


_converted: dict[int, tuple[list[dict[str, Any]], list[Address]]] = {}
_converted_lock = threading.Lock()


def _chunks(items: list[_T], size: int) -> Iterator[list[_T]]:
    for start in range(0, len(items), size):
        yield items[start : start + size]


class Ec2:
    """EC2 calls of one region, with domain errors."""

    def __init__(self, region: str, *, client: Any = None) -> None:
        self.region = region
        self.client = paced(client if client is not None else _client_for(region))
        # Changes go through a client with short timeouts (WRITE_ATTEMPT_SECONDS), reads through the other.
        self.writer = self.client if client is not None else paced(_client_for(region, write=True))

    def list_all_addresses(self) -> list[Address]:
        """Every VPC EIP of the region in one call: the pools, and the non-pool EIPs that may already
        sit on a node (associating over one of those would silently knock it off).

        DescribeAddresses is not paginated, so one call sees the whole region. The pool rule
        (pools/pool_rule.py) is applied by the caller rather than with a ``tag-key`` filter: with several
        values, moto's filter drops an EIP whose keys are neither a subset nor a superset of the values (a
        pool EIP that also carries ``Name``), and a key filter over 200 values would hit AWS's
        FilterLimitExceeded."""
        with _mapped("DescribeAddresses"):
            response = self.client.describe_addresses(Filters=[{"Name": "domain", "Values": ["vpc"]}])
        return _addresses(response)

    def describe_instances(self, instance_ids: Iterable[str]) -> dict[str, Instance]:
        """State and primary ENI per instance id; unknown ids are simply absent.

        The ``instance-id`` filter, unlike InstanceIds, does not fail the whole batch on one unknown id.
        """
        ids = sorted(set(instance_ids))
        found: dict[str, Instance] = {}
        paginator = self.client.get_paginator("describe_instances")
        for batch in _chunks(ids, FILTER_VALUES_LIMIT):
            pages = paginator.paginate(
                Filters=[{"Name": "instance-id", "Values": batch}],
                PaginationConfig={"PageSize": INSTANCES_PAGE_SIZE},
            )
            with _mapped("DescribeInstances"):
                for page in pages:
                    for reservation in page.get("Reservations", []):
                        for raw in reservation.get("Instances", []):
                            instance = Instance.from_aws(raw)
                            found[instance.instance_id] = instance
        return found

    def associate(self, *, allocation_id: str, eni_id: str, private_ip: str, allow_reassociation: bool = False) -> str:
        """Associate by ENI + private IP (InstanceId fails on multi-ENI nodes); returns the AssociationId."""
        with _mapped("AssociateAddress"):
            response = self.writer.associate_address(
                AllocationId=allocation_id,
                NetworkInterfaceId=eni_id,
                PrivateIpAddress=private_ip,
                AllowReassociation=allow_reassociation,
            )
        return str(response["AssociationId"])

    def disassociate(self, association_id: str) -> None:
        """Idempotent: an association that is already gone is what we wanted."""
        try:
            with _mapped("DisassociateAddress"):
                self.writer.disassociate_address(AssociationId=association_id)
        except NotFound:
            return

    def get_address(self, allocation_id: str) -> Address | None:
        """The current state of one allocation (to confirm an association); None when it does not exist."""
        try:
            with _mapped("DescribeAddresses"):
                response = self.client.describe_addresses(AllocationIds=[allocation_id])
        except NotFound:
            return None
        found = _addresses(response)
        return found[0] if found else None

    def addresses_on(self, *, eni_id: str, private_ip: str) -> list[Address]:
        """The EIPs (pool or not) on this private IP of this ENI, read right now. AssociateAddress onto a
        private IP that already has an EIP silently knocks the old one off, so look first."""
        with _mapped("DescribeAddresses"):
            response = self.client.describe_addresses(
                Filters=[{"Name": "network-interface-id", "Values": [eni_id]}]
            )
        # Matched here: the EC2 emulator reports the primary IP whatever private IP was asked for.
        return [a for a in _addresses(response) if a.private_ip in (None, private_ip)]

    def addresses_on_enis(self, eni_ids: Iterable[str]) -> dict[str, list[Address]]:
        """The EIPs (pool or not) on each of these ENIs, read right now: one DescribeAddresses per 200 ENIs
        (the batched form of addresses_on; the caller matches the private IP)."""
        ids = sorted(set(eni_ids))
        found: dict[str, list[Address]] = {eni_id: [] for eni_id in ids}
        for batch in _chunks(ids, FILTER_VALUES_LIMIT):
            with _mapped("DescribeAddresses"):
                response = self.client.describe_addresses(
                    Filters=[{"Name": "network-interface-id", "Values": batch}]
                )
            for address in _addresses(response):
                if address.eni_id in found:
                    found[address.eni_id].append(address)
        return found

    def get_addresses(self, allocation_ids: Iterable[str]) -> dict[str, Address]:
        """The current state of many allocations (to confirm many associations): one DescribeAddresses per
        200 ids. The ``allocation-id`` filter, unlike AllocationIds, does not fail the whole batch on one
        unknown id: unknown ids are simply absent."""
        ids = sorted(set(allocation_ids))
        found: dict[str, Address] = {}
        for batch in _chunks(ids, FILTER_VALUES_LIMIT):
            with _mapped("DescribeAddresses"):
                response = self.client.describe_addresses(Filters=[{"Name": "allocation-id", "Values": batch}])
            found.update((address.allocation_id, address) for address in _addresses(response))
        return found

    def owner_of_eni(self, eni_id: str) -> str | None:
        """The instance an ENI is attached to, or None (detached or unknown ENI)."""
        try:
            with _mapped("DescribeNetworkInterfaces"):
                response = self.client.describe_network_interfaces(NetworkInterfaceIds=[eni_id])
        except NotFound:
            return None
        for eni in response.get("NetworkInterfaces", []):
            instance_id = eni.get("Attachment", {}).get("InstanceId")
            if instance_id:
                return str(instance_id)
        return None

    # --- The region's facts (workers/region_facts.py): the EIP quota and the subnets' egress ---------------

    def eip_quota(self) -> EipQuota:
        """The account's Elastic IP quota in this region, and where it was read.

        Service Quotas (EC2's L-0263D0A3, "EC2-VPC Elastic IPs") is the authority: it holds an increase AWS
        granted. Where it cannot answer (no permission, not reachable, no such quota served), EC2's account
        attribute vpc-max-elastic-ips says the same limit. Both failing is an Ec2Error: a quota is never
        guessed."""
        try:
            return EipQuota(self._service_quota(), QUOTA_FROM_SERVICE_QUOTAS)
        except Ec2Error as exc:
            first = exc
        log.debug("%s: Service Quotas did not give the EIP quota (%s); asking EC2's account attribute",
                  self.region, first)
        try:
            return EipQuota(self._account_attribute_quota(), QUOTA_FROM_ACCOUNT_ATTRIBUTE)
        except Ec2Error as exc:
            raise type(exc)(f"EIP quota: {first}; {exc}", code=exc.code, operation=exc.operation) from exc

    def describe_subnets(self) -> list[dict[str, Any]]:
        """Every subnet of the region, as EC2 describes it (paginated; each page takes a read token)."""
        return self._every("describe_subnets", "Subnets", SUBNETS_PAGE_SIZE)

    def describe_route_tables(self) -> list[dict[str, Any]]:
        """Every route table of the region, with its routes and associations."""
        return self._every("describe_route_tables", "RouteTables", ROUTE_TABLES_PAGE_SIZE)

    def describe_nat_gateways(self) -> list[dict[str, Any]]:
        """Every NAT gateway of the region, with its addresses."""
        return self._every("describe_nat_gateways", "NatGateways", NAT_GATEWAYS_PAGE_SIZE)

    def _every(self, method: str, key: str, page_size: int) -> list[dict[str, Any]]:
        operation = "".join(part.title() for part in method.split("_"))  # describe_subnets -> DescribeSubnets
        found: list[dict[str, Any]] = []
        pages = self.client.get_paginator(method).paginate(PaginationConfig={"PageSize": page_size})
        with _mapped(operation):
            for page in pages:
                found.extend(page.get(key, []))
        return found

    def _service_quota(self) -> int:
        if not _asks_service_quotas():
            raise Permanent("GetServiceQuota: not asked: EC2 has an endpoint of its own and Service Quotas none",
                            code="NoEndpoint", operation="GetServiceQuota")
        with _mapped("GetServiceQuota"):
            response = _quotas_client_for(self.region).get_service_quota(ServiceCode="ec2",
                                                                         QuotaCode=EIP_QUOTA_CODE)
        value = (response.get("Quota") or {}).get("Value")
        if value is None:
            raise Permanent(f"GetServiceQuota: {EIP_QUOTA_CODE} came without a value", code="NoValue",
                            operation="GetServiceQuota")
        return int(value)

    def _account_attribute_quota(self) -> int:
        with _mapped("DescribeAccountAttributes"):
            response = self.client.describe_account_attributes(AttributeNames=[EIP_QUOTA_ATTRIBUTE])
        # Matched by name: an emulator may answer every attribute whatever was asked for.
        for attribute in response.get("AccountAttributes", []):
            if attribute.get("AttributeName") != EIP_QUOTA_ATTRIBUTE:
                continue
            for value in attribute.get("AttributeValues", []):
                try:
                    return int(value.get("AttributeValue", ""))
                except ValueError:
                    break
        raise Permanent(f"DescribeAccountAttributes: no number for {EIP_QUOTA_ATTRIBUTE}", code="NoValue",
                        operation="DescribeAccountAttributes")


log = logging.getLogger(__name__)

# Service Quotas' code of "EC2-VPC Elastic IPs", and EC2's account attribute that says the same limit.
EIP_QUOTA_CODE = "L-0263D0A3"
EIP_QUOTA_ATTRIBUTE = "vpc-max-elastic-ips"
QUOTA_FROM_SERVICE_QUOTAS = "service-quotas"
QUOTA_FROM_ACCOUNT_ATTRIBUTE = "account-attribute"
# The largest pages these Describe calls serve.
SUBNETS_PAGE_SIZE = 1000
ROUTE_TABLES_PAGE_SIZE = 100
NAT_GATEWAYS_PAGE_SIZE = 1000


class EipQuota(NamedTuple):
    limit: int
    source: str  # QUOTA_FROM_SERVICE_QUOTAS | QUOTA_FROM_ACCOUNT_ATTRIBUTE


# Service Quotas is read once per region every few minutes, outside any pass's steps: short timeouts and one
# retry, so that an endpoint that does not answer costs seconds before the account attribute is asked. It is
# not EC2, so its calls take no token of EC2's budget (its own rate limit is far above one call per minutes).
_QUOTAS_CONFIG = Config(retries={"mode": "standard", "max_attempts": 2}, connect_timeout=2, read_timeout=4)
_quotas_clients: dict[tuple[str, str | None, str | None], Any] = {}


def _asks_service_quotas() -> bool:
    """Whether Service Quotas is asked at all. Its endpoint resolves the standard boto3 way
    (AWS_ENDPOINT_URL_SERVICE_QUOTAS, else AWS_ENDPOINT_URL, else AWS's). When EC2 alone was pointed elsewhere
    (AWS_ENDPOINT_URL_EC2: an emulator, a private endpoint), AWS's public Service Quotas would be asked with
    credentials meant for that endpoint, and about another account if anything: EC2's account attribute,
    read from the endpoint EC2 was given, says the quota instead."""
    if os.environ.get("AWS_ENDPOINT_URL_SERVICE_QUOTAS") or os.environ.get("AWS_ENDPOINT_URL"):
        return True
    return not os.environ.get("AWS_ENDPOINT_URL_EC2")


def _quotas_client_for(region: str) -> Any:
    key = (region, os.environ.get("AWS_ENDPOINT_URL_SERVICE_QUOTAS"), os.environ.get("AWS_ENDPOINT_URL"))
    with _clients_lock:
        client = _quotas_clients.get(key)
        if client is None:
            client = _new_client("service-quotas", region, _QUOTAS_CONFIG)
            _quotas_clients[key] = client
        return client
