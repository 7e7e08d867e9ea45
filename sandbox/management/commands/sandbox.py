"""`manage.py sandbox`: the EC2 and Kubernetes API emulators in the foreground, with demo data and a simulation.

Development and demo only. eipdash itself never knows it runs against the sandbox: the sandbox only hands
out an endpoint and a kubeconfig, through ``var/sandbox/env`` and ``var/sandbox/kubeconfig``.
"""

from __future__ import annotations

import gc
import json
import os
import signal
import socket
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

from django.conf import settings
from django.core.management import call_command
from django.core.management.base import BaseCommand, CommandError, CommandParser

from sandbox.ports import EC2_PORT, KUBE_PORT, start_preferring
from sandbox.signals import on_stop_signals

ENV_FILE_NAME = "env"
KUBECONFIG_NAME = "kubeconfig"
SECOND_KUBECONFIG_NAME = "kubeconfig-2"
# The demo account's EIP quota per region (moto says 5, AWS's default; the demo holds 13 addresses).
SANDBOX_EIP_QUOTA = 20


def write_atomically(path: Path, text: str) -> None:
    # Readers (make run, the e2e test) treat the env file's existence as "ready": never let them see half.
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(text)
    os.replace(tmp, path)


def _pipe(source: socket.socket, target: socket.socket) -> None:
    try:
        while data := source.recv(65536):
            target.sendall(data)
    except OSError:
        pass
    finally:
        for sock in (source, target):
            try:
                sock.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass


def relay(listen_port: int, target_port: int, stop: threading.Event, host: str = "0.0.0.0") -> socket.socket:
    """Expose a loopback-only emulator on every interface (compose demo: other containers reach it).

    The emulators themselves only ever bind 127.0.0.1; this byte pipe is the one opening, and only
    with --public-host.
    """
    server = socket.create_server((host, listen_port))

    def accept() -> None:
        while not stop.is_set():
            try:
                client, _ = server.accept()
            except OSError:
                return
            upstream = socket.create_connection(("127.0.0.1", target_port))
            threading.Thread(target=_pipe, args=(client, upstream), daemon=True).start()
            threading.Thread(target=_pipe, args=(upstream, client), daemon=True).start()

    threading.Thread(target=accept, daemon=True, name=f"relay-{listen_port}").start()
    return server


class Interrupted(BaseException):
    """SIGINT or SIGTERM while the sandbox was still starting: the start-up is abandoned where it stands (a
    BaseException, like KeyboardInterrupt, so that no ``except Exception`` on the way swallows it)."""


_Server = TypeVar("_Server")


class Command(BaseCommand):
    help = "Run the EC2 and Kubernetes API emulators on 127.0.0.1, with demo data and a scale simulation."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--ec2-port", type=int, default=None,
                            help=f"the EC2 emulator's port (default: {EC2_PORT} when free, else any free port)")
        parser.add_argument("--kube-port", type=int, default=None,
                            help=f"the Kubernetes emulator's port (default: {KUBE_PORT} when free, else any)")
        parser.add_argument("--no-seed", action="store_true", help="start empty: no launch specs, EIPs or nodes")
        parser.add_argument("--simulate", action="store_true", help="run the scale simulation")
        parser.add_argument("--seed", type=int, default=1, help="random seed of the simulation (deterministic)")
        parser.add_argument(
            "--state-dir", default=str(Path(settings.VAR_DIR) / "sandbox"),
            help="where the env file and the kubeconfig are written (default var/sandbox)",
        )
        parser.add_argument(
            "--public-host", default="",
            help="also serve both emulators on all interfaces at --ec2-port/--kube-port and advertise this "
            "host name in the env file and kubeconfig (docker compose demo only)",
        )
        parser.add_argument("--clusters", type=int, choices=(1, 2), default=1,
                            help="2: also a second cluster (sandbox-eu, eu-west-1) on a second Kubernetes emulator")
        parser.add_argument("--duration", type=float, default=0.0, help="stop after N seconds (0: run until signalled)")
        pace = parser.add_argument_group("simulation pace")
        pace.add_argument("--tick", type=float, default=1.0, help="seconds between simulation steps")
        pace.add_argument("--scale-every", type=float, default=8.0, help="seconds between autoscaler decisions")
        pace.add_argument("--evict-every", type=float, default=1.5, help="seconds between two evictions on a drain")
        pace.add_argument("--drain-grace", type=float, default=6.0,
                          help="seconds between the last eviction and the instance's termination")
        pace.add_argument("--pods-per-node", type=int, default=3)
        pace.add_argument("--overscale-every", type=int, default=4,
                          help="every Nth decision asks for more nodes than the pool holds (0: never)")

    def handle(self, *args: Any, **options: Any) -> None:
        stop = threading.Event()
        # Until it is ready, a signal abandons the start-up where it stands (binding, seeding): letting the
        # seeding finish first kept a process that had been told to stop running for seconds.
        self._starting = True

        def _stop(signum: int, _frame: object) -> None:
            self.stdout.write(f"sandbox: {signal.Signals(signum).name} received, stopping")
            stop.set()
            if self._starting:
                self._starting = False  # a second signal must not break the clean-up
                raise Interrupted

        on_stop_signals(_stop)
        try:
            self._serve(stop, options)
        except Interrupted:
            pass
        finally:
            # The interpreter's exit spent 2 to 6 s collecting moto's hundreds of thousands of objects after
            # everything had stopped: what is left is freed without a collection.
            gc.freeze()

    def _listen(self, start: Callable[[int | None], _Server], asked: int | None, preferred: int, flag: str,
                what: str, url: Callable[[_Server], str]) -> _Server:
        """An emulator on the port asked for (refused with the reason when it is taken), else on ``preferred``
        when it is free, else on any free port, saying which."""
        if asked is None:
            server, got_it = start_preferring(start, preferred)
            if not got_it:
                self.stdout.write(f"sandbox: port {preferred} is taken: the {what} emulator listens on "
                                  f"{url(server)} instead")
            return server
        try:
            return start(asked)
        except OSError as error:
            reason = os.strerror(error.errno) if error.errno else str(error)
            raise CommandError(
                f"cannot listen on 127.0.0.1:{asked} ({flag} {asked}): {reason}. Stop what listens "
                f"there, or leave {flag} out to take {preferred} when it is free, else any free port"
            ) from None

    def _serve(self, stop: threading.Event, options: dict[str, Any]) -> None:
        from sandbox.ec2_emulator import Ec2Emulator, Ec2World, account_eip_quota
        from sandbox.kube_emulator import KubeEmulator
        from sandbox.second_cluster import SecondCluster
        from sandbox.seed import seed_world
        from sandbox.simulate import KubeHttp, Pace, Simulation

        state_dir = Path(options["state_dir"]).resolve()
        state_dir.mkdir(parents=True, exist_ok=True)
        env_path = state_dir / ENV_FILE_NAME
        kubeconfig_path = state_dir / KUBECONFIG_NAME
        # A stale env file from an earlier run would point at dead ports: gone before anything else.
        env_path.unlink(missing_ok=True)

        started = time.monotonic()
        public_host = options["public_host"]
        relays: list[socket.socket] = []
        if options["clusters"] > 1 and public_host:
            raise CommandError("--clusters 2 is for make run on this machine, not with --public-host")
        ec2: Ec2Emulator | None = None
        kube: KubeEmulator | None = None
        second: SecondCluster | None = None
        account_eip_quota(SANDBOX_EIP_QUOTA)
        try:
            if public_host:
                # The emulators take free loopback ports and the relays take the well-known ones.
                ec2 = Ec2Emulator(None).start()
                kube = KubeEmulator(None).start()
            else:
                ec2 = self._listen(lambda port: Ec2Emulator(port).start(), options["ec2_port"], EC2_PORT,
                                   "--ec2-port", "EC2", lambda server: server.endpoint_url)
                kube = self._listen(lambda port: KubeEmulator(port).start(), options["kube_port"], KUBE_PORT,
                                    "--kube-port", "Kubernetes", lambda server: server.url)
            kube.write_kubeconfig(str(kubeconfig_path))
            ec2_env = ec2.env()
            if public_host:
                ec2_public, kube_public = options["ec2_port"] or EC2_PORT, options["kube_port"] or KUBE_PORT
                relays.append(relay(ec2_public, ec2.port, stop))
                relays.append(relay(kube_public, int(kube.port or 0), stop))
                ec2_env["AWS_ENDPOINT_URL_EC2"] = f"http://{public_host}:{ec2_public}"
                config = json.loads(kubeconfig_path.read_text())
                config["clusters"][0]["cluster"]["server"] = f"http://{public_host}:{kube_public}"
                write_atomically(kubeconfig_path, json.dumps(config, indent=2))
            world = Ec2World(ec2.endpoint_url, ec2.env()["AWS_DEFAULT_REGION"])
            pace = Pace(
                tick_seconds=options["tick"],
                scale_every_seconds=options["scale_every"],
                evict_every_seconds=options["evict_every"],
                drain_grace_seconds=options["drain_grace"],
                pods_per_node=options["pods_per_node"],
                overscale_every=options["overscale_every"],
            )
            simulation: Simulation | None = None
            if not options["no_seed"]:
                from sandbox.seed import read_spec, spec_files

                simulation = Simulation(
                    ec2=world, kube=KubeHttp(kube.url), specs=[read_spec(p) for p in spec_files()],
                    seed=options["seed"], pace=pace,
                )
                result = seed_world(
                    simulation=simulation,
                    apply_spec=lambda path: call_command("launchspec", "apply", "-f", str(path)),
                )
                pools = ", ".join(f"{name}: {len(eips)} EIPs" for name, eips in result.pools.items())
                self.stdout.write(
                    f"sandbox: seeded {len(result.specs)} launch specs ({pools}), "
                    f"{len(result.decoys)} decoy EIPs, {len(result.nodes)} nodes"
                )
            if options["clusters"] > 1:
                second = SecondCluster.start(
                    ec2_endpoint=ec2.endpoint_url, kubeconfig=state_dir / SECOND_KUBECONFIG_NAME,
                    seed=options["seed"], pace=pace, populate=not options["no_seed"],
                )
                self.stdout.write(f"sandbox: {second.describe()}")

            env = dict(ec2_env, KUBECONFIG=str(kubeconfig_path))
            if second is not None:
                env.update(second.env())
            write_atomically(env_path, "".join(f"{key}={value}\n" for key, value in env.items()))
            self.stdout.write(
                f"sandbox: ready in {time.monotonic() - started:.1f}s: EC2 {env['AWS_ENDPOINT_URL_EC2']}, "
                f"Kubernetes {kube.url}, env file {env_path}"
            )
            self.stdout.flush()
            self._starting = False  # from here on, a signal ends the simulation's loop

            duration = options["duration"] or None
            if options["simulate"] and simulation is not None:
                self.stdout.write("sandbox: simulation running (autoscaler, scheduler, kubelets)")
                if second is not None:
                    second.run_in_background(stop, duration)
                simulation.run(stop, duration=duration)
                counters = simulation.counters
                self.stdout.write(
                    f"sandbox: simulation stopped: {counters.launched} launched, {counters.terminated} "
                    f"terminated, {counters.pods_scheduled} pods scheduled, {counters.pods_evicted} evicted"
                )
            else:
                stop.wait(duration)
        finally:
            self._starting = False
            env_path.unlink(missing_ok=True)
            for server in relays:
                server.close()
            if second is not None:
                second.stop()
            if kube is not None:
                kube.stop()
            if ec2 is not None:
                ec2.stop()
            self.stdout.write("sandbox: stopped")
