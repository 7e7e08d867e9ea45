"""EC2 emulator for development and tests: moto in server mode on loopback, plus world-building helpers.

The product never imports this module. It only needs the endpoint, which it finds the standard boto3 way
through ``AWS_ENDPOINT_URL_EC2`` (see :meth:`Ec2Emulator.env`). ``--latency-ms 80 --throttle`` (or the same
keyword arguments) put AWS's latency and request rate limits in front of moto (sandbox/aws_limits.py).

Where moto 5.2.5 differs from AWS (each point is checked by tests/sandbox/test_ec2_emulator.py):

(a) **Terminate keeps the association.** After TerminateInstances, moto still reports the EIP with its
    AssociationId, NetworkInterfaceId and PrivateIpAddress. AWS drops the association when the instance
    (and so its primary ENI) goes away. :meth:`Ec2World.terminate` disassociates first by default to
    behave like AWS; pass ``drop_associations=False`` to reproduce moto's behaviour.
(b) **Moving an associated EIP is refused unless AllowReassociation=True.** moto answers
    ``Resource.AlreadyAssociated`` both for ``AllowReassociation=False`` *and* when the parameter is left
    out. AWS only refuses with an explicit ``False``: by default it silently moves the EIP. eipdash always
    sends ``AllowReassociation=False``, which behaves the same on both.
(c) **No InstanceId after an association by ENI.** After AssociateAddress with NetworkInterfaceId, moto's
    DescribeAddresses carries ``InstanceId: ""``; AWS fills in the instance the ENI is attached to. Key the
    association on NetworkInterfaceId and resolve the instance through DescribeInstances or
    DescribeNetworkInterfaces.
(d) **A multi-value ``tag-key`` filter is not an OR.** With one value, moto matches like AWS. With several,
    moto keeps an EIP only when its set of tag keys is a subset or a superset of the values, so a pool EIP
    that also carries ``Name`` disappears. AWS returns every EIP carrying any of the keys. The adapter
    therefore matches tag keys itself on one unfiltered (``domain=vpc``) DescribeAddresses.

One difference in speed, not in behaviour: moto finds the tags of each resource it describes by matching
every tag of the region against a pattern (DescribeInstances and DescribeAddresses do it for every item), so
with 5,000 tagged EIPs one describe of 5,000 items takes minutes. :func:`fast_tag_lookup` (applied by
:meth:`Ec2Emulator.start`) answers the same list from moto's own dict of tags by resource id.
"""

from __future__ import annotations

import argparse
import logging
import os
import signal
import socket
import sys
import threading
import time
import urllib.request
from typing import Any

import boto3
from moto.moto_server.werkzeug_app import DomainDispatcherApplication, MotoRequestHandler, create_backend_app
from werkzeug.serving import BaseWSGIServer, make_server

from sandbox.aws_limits import BucketSizes, LimitsProxy
from sandbox.ports import SERVE_POLL, free_port, wait_for_port
from sandbox.signals import on_stop_signals

REGION = "us-east-1"
_FAKE_KEY = "testing"
# AMI ids are not validated by moto; any well-formed id launches.
_IMAGE_ID = "ami-12345678"
_VPC_CIDR = "10.0.0.0/16"
_SANDBOX_TAG = {"Key": "eipdash-sandbox", "Value": "true"}


def fast_tag_lookup() -> None:
    """One resource's tags from moto's dict, as ``describe_tags(filters={"resource-id": [id]})`` gives them
    (an EC2 id has no wildcard, so that filter is an exact match), without scanning every tag of the region."""
    from moto.ec2.models.core import TaggedEC2Resource
    from moto.ec2.utils import EC2_PREFIX_TO_RESOURCE, get_prefix

    def get_tags(self: Any) -> list[dict[str, str]]:
        if not self.id:
            return []
        tags = self.ec2_backend.tags.get(self.id) or {}
        kind = EC2_PREFIX_TO_RESOURCE.get(get_prefix(self.id), "")
        return [{"resource_id": self.id, "key": key, "value": value, "resource_type": kind}
                for key, value in list(tags.items())]

    TaggedEC2Resource.get_tags = get_tags  # type: ignore[method-assign]


def no_default_amis() -> None:
    """moto builds its hundreds of public AMIs again for each region at every reset (a fifth of a second of CPU
    each time, most of a test's reset); the sandbox launches from an id moto does not check, and eipdash never
    reads images. An explicit MOTO_EC2_LOAD_DEFAULT_AMIS still wins."""
    os.environ.setdefault("MOTO_EC2_LOAD_DEFAULT_AMIS", "false")


def account_eip_quota(limit: int) -> None:
    """This process's moto answers DescribeAccountAttributes with `limit` as the account's EIP quota
    (`vpc-max-elastic-ips`; moto says 5, AWS's default). The sandbox's pools and decoys hold more than 5
    addresses, as an account whose quota was raised does: with 5, its Capacity section would show the
    region over its quota."""
    from moto.core.responses import ActionResult
    from moto.ec2.responses.account_attributes import AccountAttributes

    original = AccountAttributes.describe_account_attributes

    def describe_account_attributes(self: Any) -> ActionResult:
        result = original(self)
        answer: dict[str, list[dict[str, Any]]] = result.result  # type: ignore[assignment]
        for attribute in answer["AccountAttributes"]:
            if attribute["AttributeName"] in ("vpc-max-elastic-ips", "max-elastic-ips"):
                attribute["AttributeValues"] = [{"AttributeValue": str(limit)}]
        return result

    AccountAttributes.describe_account_attributes = describe_account_attributes  # type: ignore[method-assign]


class Ec2Emulator:
    """A moto server on 127.0.0.1, in a daemon thread of this process.

    With ``latency_ms`` or ``throttle``, moto listens on another free port behind a
    :class:`~sandbox.aws_limits.LimitsProxy` on ``port``: ``endpoint_url`` (and :meth:`env`) is the proxy, with
    EC2's latency and request token buckets; ``direct_url`` is moto itself, for building a world without
    spending the buckets; ``limits`` is the proxy (its ``stats()``), None without one.
    """

    def __init__(self, port: int | None = None, *, latency_ms: float = 0, throttle: bool = False,
                 sizes: BucketSizes | None = None) -> None:
        self.port = port or free_port()
        self._latency_ms = latency_ms
        self._throttle = throttle
        self._sizes = sizes
        limited = bool(latency_ms) or throttle
        self._moto_port = free_port() if limited else self.port
        self.limits: LimitsProxy | None = None
        self._server: BaseWSGIServer | None = None
        self._thread: threading.Thread | None = None

    @property
    def endpoint_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def direct_url(self) -> str:
        """moto itself: the same as ``endpoint_url`` without latency and throttling."""
        return f"http://127.0.0.1:{self._moto_port}"

    def start(self) -> Ec2Emulator:
        """Listen and answer; OSError (EADDRINUSE: another program has the port) at once, nothing left running."""
        # werkzeug logs every request at INFO: noisy in tests, and the foreground command turns it back on.
        logging.getLogger("werkzeug").setLevel(logging.WARNING)
        fast_tag_lookup()
        no_default_amis()
        try:
            self._serve_moto()
            self._wait_until_answering()
            # moto keeps its resources in module globals, shared by every server in this process: without
            # this, a new emulator would start with what an earlier one (a test's session emulator) left.
            self._reset_moto()
            if self._moto_port != self.port:
                self.limits = LimitsProxy(self.direct_url, latency_ms=self._latency_ms, throttle=self._throttle,
                                          sizes=self._sizes, port=self.port).start()
                wait_for_port(self.port)
        except BaseException:
            self.stop()
            raise
        return self

    def _serve_moto(self) -> None:
        # The socket is bound here, in the caller's thread, and handed to werkzeug. moto's ThreadedMotoServer
        # binds in its server thread instead: a taken port ended that thread (werkzeug prints "Address already
        # in use" and calls sys.exit there) while start() waited forever for a server that never came, or,
        # behind a port another moto held, reset and seeded that other stack's emulator.
        sock = socket.create_server(("127.0.0.1", self._moto_port))
        try:
            self._server = make_server("127.0.0.1", self._moto_port, DomainDispatcherApplication(create_backend_app),
                                       threaded=True, request_handler=MotoRequestHandler, fd=sock.fileno())
        finally:
            sock.close()  # werkzeug serves a duplicate of it
        self._thread = threading.Thread(target=self._server.serve_forever, kwargs={"poll_interval": SERVE_POLL},
                                        name="ec2-emulator", daemon=True)
        self._thread.start()

    def _wait_until_answering(self, timeout: float = 15.0) -> None:
        # The socket can accept before the WSGI app answers; ask a real question, a cheap one: data.json
        # dumps every model of the process, which takes seconds once another moto server here has been used.
        deadline = time.monotonic() + timeout
        while True:
            try:
                with urllib.request.urlopen(f"{self.direct_url}/moto-api/config", timeout=2) as response:
                    if 200 <= response.status < 300:  # moto answers this GET with 201
                        return
            except OSError:
                pass
            if time.monotonic() > deadline:
                raise TimeoutError(f"moto server on {self.endpoint_url} does not answer")
            time.sleep(0.05)

    def stop(self) -> None:
        if self.limits is not None:
            self.limits.stop()
            self.limits = None
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None
        if self._thread is not None:
            self._thread.join(timeout=5)
            self._thread = None

    def reset(self) -> None:
        """Forget every resource (all regions): much cheaper than a new server per test. With the limits
        proxy, also zero its counters and fill its buckets."""
        self._reset_moto()
        if self.limits is not None:
            self.limits.reset()

    def _reset_moto(self) -> None:
        request = urllib.request.Request(f"{self.direct_url}/moto-api/reset", method="POST", data=b"")
        with urllib.request.urlopen(request, timeout=10) as response:
            response.read()

    def env(self) -> dict[str, str]:
        """What a process needs to reach this emulator through boto3's standard resolution."""
        return {
            "AWS_ENDPOINT_URL_EC2": self.endpoint_url,
            "AWS_DEFAULT_REGION": REGION,
            "AWS_ACCESS_KEY_ID": _FAKE_KEY,
            "AWS_SECRET_ACCESS_KEY": _FAKE_KEY,
        }

    def __enter__(self) -> Ec2Emulator:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


class Ec2World:
    """Builds AWS-shaped state (VPC, nodes, EIPs) in the emulator through its HTTP endpoint."""

    def __init__(self, endpoint_url: str, region: str = REGION) -> None:
        self.region = region
        self.client: Any = boto3.client(
            "ec2",
            region_name=region,
            endpoint_url=endpoint_url,
            aws_access_key_id=_FAKE_KEY,
            aws_secret_access_key=_FAKE_KEY,
        )
        self._subnets: dict[str, str] | None = None

    def ensure_network(self) -> dict[str, str]:
        """A sandbox VPC with one subnet in each of the region's first three AZs: {az: subnet_id}."""
        if self._subnets is not None:
            return self._subnets
        vpcs = self.client.describe_vpcs(
            Filters=[{"Name": f"tag:{_SANDBOX_TAG['Key']}", "Values": [_SANDBOX_TAG["Value"]]}]
        )["Vpcs"]
        if vpcs:
            vpc_id = vpcs[0]["VpcId"]
            # Only the subnets made here (tagged): the seed adds a private one in a zone of its own.
            subnets = self.client.describe_subnets(Filters=[
                {"Name": "vpc-id", "Values": [vpc_id]},
                {"Name": f"tag:{_SANDBOX_TAG['Key']}", "Values": [_SANDBOX_TAG["Value"]]},
            ])["Subnets"]
            self._subnets = {s["AvailabilityZone"]: s["SubnetId"] for s in subnets}
            return self._subnets
        vpc_id = self.client.create_vpc(
            CidrBlock=_VPC_CIDR, TagSpecifications=[{"ResourceType": "vpc", "Tags": [_SANDBOX_TAG]}]
        )["Vpc"]["VpcId"]
        self._route_main_table_to_internet(vpc_id)
        zones = self.client.describe_availability_zones()["AvailabilityZones"]
        names = sorted(z["ZoneName"] for z in zones)[:3]
        self._subnets = {}
        for index, az in enumerate(names):
            # /20 per AZ: room for thousands of node IPs in a scale simulation.
            subnet = self.client.create_subnet(
                VpcId=vpc_id, CidrBlock=f"10.0.{index * 16}.0/20", AvailabilityZone=az,
                TagSpecifications=[{"ResourceType": "subnet", "Tags": [_SANDBOX_TAG]}],
            )
            self._subnets[az] = subnet["Subnet"]["SubnetId"]
        return self._subnets

    def _route_main_table_to_internet(self, vpc_id: str) -> None:
        """An internet gateway as the main route table's default route, as in an account's default VPC: its
        subnets are public, so a node's EIP carries its egress (eipdash reads the route: pools/egress.py)."""
        gateway = self.client.create_internet_gateway()["InternetGateway"]["InternetGatewayId"]
        self.client.attach_internet_gateway(InternetGatewayId=gateway, VpcId=vpc_id)
        main = self.client.describe_route_tables(Filters=[
            {"Name": "vpc-id", "Values": [vpc_id]}, {"Name": "association.main", "Values": ["true"]},
        ])["RouteTables"][0]["RouteTableId"]
        self.client.create_route(RouteTableId=main, DestinationCidrBlock="0.0.0.0/0", GatewayId=gateway)

    def launch_instance(self, az: str | None = None, extra_enis: int = 0) -> tuple[str, str, str]:
        """One running instance: (instance_id, primary_eni_id, private_ip).

        ``extra_enis`` secondary ENIs are attached at device index 1.. like the EKS VPC CNI does.
        """
        subnets = self.ensure_network()
        az = az or sorted(subnets)[0]
        subnet_id = subnets[az]
        instance = self.client.run_instances(
            ImageId=_IMAGE_ID, InstanceType="m5.large", MinCount=1, MaxCount=1, SubnetId=subnet_id
        )["Instances"][0]
        instance_id = instance["InstanceId"]
        primary = next(n for n in instance["NetworkInterfaces"] if n["Attachment"]["DeviceIndex"] == 0)
        for device_index in range(1, extra_enis + 1):
            eni_id = self.client.create_network_interface(SubnetId=subnet_id)["NetworkInterface"]["NetworkInterfaceId"]
            self.client.attach_network_interface(
                NetworkInterfaceId=eni_id, InstanceId=instance_id, DeviceIndex=device_index
            )
        return instance_id, primary["NetworkInterfaceId"], primary["PrivateIpAddress"]

    def terminate(self, instance_id: str, drop_associations: bool = True) -> None:
        """Terminate; with ``drop_associations`` first free its EIPs, as AWS does and moto does not."""
        if drop_associations:
            reservations = self.client.describe_instances(InstanceIds=[instance_id])["Reservations"]
            eni_ids = [
                eni["NetworkInterfaceId"]
                for reservation in reservations
                for instance in reservation["Instances"]
                for eni in instance.get("NetworkInterfaces", [])
            ]
            if eni_ids:
                addresses = self.client.describe_addresses(
                    Filters=[{"Name": "network-interface-id", "Values": eni_ids}]
                )["Addresses"]
                for address in addresses:
                    if address.get("AssociationId"):
                        self.client.disassociate_address(AssociationId=address["AssociationId"])
        self.client.terminate_instances(InstanceIds=[instance_id])

    def allocate_eip(self, tags: dict[str, str]) -> tuple[str, str]:
        """A VPC EIP carrying ``tags``: (allocation_id, public_ip)."""
        spec = [{"ResourceType": "elastic-ip", "Tags": [{"Key": k, "Value": v} for k, v in tags.items()]}]
        kwargs: dict[str, Any] = {"Domain": "vpc"}
        if tags:
            kwargs["TagSpecifications"] = spec
        allocation = self.client.allocate_address(**kwargs)
        return allocation["AllocationId"], allocation["PublicIp"]

    def address(self, allocation_id: str) -> dict[str, Any]:
        """The raw DescribeAddresses entry of one allocation."""
        result: dict[str, Any] = self.client.describe_addresses(AllocationIds=[allocation_id])["Addresses"][0]
        return result


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="Run the EC2 emulator (moto server) on 127.0.0.1.")
    parser.add_argument("--port", type=int, default=5055)
    parser.add_argument("--latency-ms", type=float, default=0.0,
                        help="answer every EC2 call this much later, as AWS would (e.g. 80)")
    parser.add_argument("--throttle", action="store_true",
                        help="enforce EC2's request token buckets: RequestLimitExceeded when one is empty")
    args = parser.parse_args(argv)
    emulator = Ec2Emulator(port=args.port, latency_ms=args.latency_ms, throttle=args.throttle)
    # Ctrl-C (SIGINT) stops it even when its parent ignored or blocked SIGINT (sandbox/signals.py).
    on_stop_signals(signal.default_int_handler, (signal.SIGINT,))
    # Everything after the server starts sits inside the try: a Ctrl-C that lands while it is still
    # starting or printing must stop it cleanly (exit 0), not leave a traceback and a listening thread.
    try:
        try:
            emulator.start()
        except OSError as error:
            # A taken port: the reason and a non-zero exit at once (a supervisor sees it die).
            print(f"EC2 emulator: cannot listen on 127.0.0.1:{args.port}: {os.strerror(error.errno or 0)}",
                  file=sys.stderr)
            raise SystemExit(1) from None
        logging.basicConfig(level=logging.INFO)
        logging.getLogger("werkzeug").setLevel(logging.INFO)
        # These lines are the "ready" signal: they come only once the server answers.
        if emulator.limits is not None:
            # Before the ready lines: moto without the limits, and the proxy's counters (sandbox/aws_limits.py).
            print(f"EC2 emulator without limits: {emulator.direct_url}; counters: {emulator.endpoint_url}"
                  "/_limits/stats", flush=True)
        for key, value in emulator.env().items():
            print(f"{key}={value}", flush=True)
        while True:
            time.sleep(3600)
    except KeyboardInterrupt:
        pass
    finally:
        emulator.stop()


if __name__ == "__main__":
    main()
