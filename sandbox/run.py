"""`make run`: the whole system live on http://127.0.0.1:8000, in the foreground, from one supervisor.

Steps: migrate, ensure the admin user, then start and watch the children:

    redis    embedded valkey-server on a free loopback port (skipped when REDIS_URL is set)
    sandbox  manage.py sandbox --simulate (EC2 + Kubernetes API emulators, demo data, the simulation;
             with --clusters 2 a second Kubernetes emulator and cluster, sandbox-eu in eu-west-1)
    worker   celery worker        } started only once the sandbox wrote var/sandbox/env, whose
    beat     celery beat          } KEY=VALUE lines (endpoint, region, fake keys, KUBECONFIG) they all get
    watch    manage.py watch_nodes} (when the command exists)
    web      manage.py runserver 127.0.0.1:8000 --noreload

Ctrl-C (or SIGTERM) stops every child. The Celery worker gets a warm shutdown (SIGTERM to its main process
only: it finishes the pass it runs, then stops its pool); the others get SIGTERM to their process group. A
child that exits on its own is reported loudly with its last lines, and the whole run stops: a half-running
demo would only mislead. Every wait while the stack starts (Redis, the sandbox's env file, the web's first
answer) watches all the children, so a child that dies early ends the run at once, not at the wait's timeout.

The console shows what changes: routine lines (no-op passes, Celery's task received/succeeded lines, the
beat's ticks, successful page loads and polls) are hidden, and the "eipdash is live" line with the login is
printed again every few minutes so that it never scrolls away for good. EIPDASH_RUN_VERBOSE=1 shows every
line. var/sandbox/env holds everything a shell needs to use the running stack:
`set -a; . var/sandbox/env; .venv/bin/python manage.py launchspec list`.

The emulators start empty on every run, so the record of the previous run would describe a world that no
longer exists: unless DATABASE_URL is set (or --keep-db is given), each run starts from a fresh SQLite file
in var/sandbox/. The admin password is kept in var/admin-password, so the login stays the same.
"""

from __future__ import annotations

import argparse
import collections
import ctypes
import io
import os
import re
import shlex
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from .ports import EC2_PORT, KUBE_PORT, free_port
from .signals import on_stop_signals

BASE_DIR = Path(__file__).resolve().parent.parent
VAR_DIR = BASE_DIR / "var"
STATE_DIR = VAR_DIR / "sandbox"
PYTHON = sys.executable
STOP_GRACE_SECONDS = 8.0
SANDBOX_READY_SECONDS = 120.0
WEB_READY_SECONDS = 60.0
# A warm shutdown lets the worker finish the pass it runs (a pass is bounded well below this).
WORKER_STOP_GRACE_SECONDS = 30.0
BANNER_EVERY_SECONDS = 300.0

# Routine lines hidden from the console (still kept for a crash report): what repeats every few seconds and
# says nothing new. Anything else, including every warning and error, is shown.
QUIET = {
    "worker": (
        re.compile(r"Task workers\.tasks\.\w+\[[^\]]+\] (received|succeeded in )"),
        re.compile(r"\] [^:\s]+: (nothing to do|skipped \(another worker)"),
    ),
    "beat": (re.compile(r"Scheduler: Sending due task "),),
    "watch": (re.compile(r" modified: reconcile spec "),),
    "web": (re.compile(r'"(GET|HEAD) [^"]*" [23]\d\d '),),
}

_COLOURS = ["36", "33", "35", "32", "34", "96", "93"]
_PR_SET_PDEATHSIG = 1


def _die_with_parent() -> None:
    # If the supervisor itself is killed (SIGKILL, a closed terminal), its children must not live on.
    try:
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(_PR_SET_PDEATHSIG, signal.SIGTERM)
    except OSError:
        pass


@dataclass
class Child:
    name: str
    argv: list[str]
    process: subprocess.Popen[bytes]
    colour: str
    last_lines: collections.deque[str] = field(default_factory=lambda: collections.deque(maxlen=25))
    expected_exit: bool = False
    # Servers the other children talk to: started first, stopped last.
    infrastructure: bool = False
    # Celery's worker: SIGTERM to its main process only (warm shutdown), never to its pool processes.
    warm_shutdown: bool = False
    quiet: tuple[re.Pattern[str], ...] = ()
    hidden: int = 0
    # Set once a line of its output matches `ready_when` (e.g. Celery's "… ready."): started is not serving.
    ready_when: re.Pattern[str] | None = None
    ready: threading.Event = field(default_factory=threading.Event)
    # Reads its output until the pipe closes: joined before a crash report, so that the report is last.
    pump: threading.Thread | None = None


class Supervisor:
    """Starts children in their own process groups, prefixes their output, and stops them all together."""

    def __init__(self, out: io.TextIOBase | None = None) -> None:
        self.out = out or sys.stdout
        self.children: list[Child] = []
        self._lock = threading.Lock()
        self._tty = hasattr(self.out, "isatty") and self.out.isatty()
        self.width = 7

    def say(self, name: str, line: str, colour: str = "1") -> None:
        prefix = f"{name:<{self.width}} |"
        if self._tty:
            prefix = f"\033[{colour}m{prefix}\033[0m"
        with self._lock:
            self.out.write(f"{prefix} {line}\n")
            self.out.flush()

    def start(self, name: str, argv: Sequence[str], env: Mapping[str, str], *,
              infrastructure: bool = False, warm_shutdown: bool = False,
              ready_when: re.Pattern[str] | None = None) -> Child:
        self.width = max(self.width, len(name))
        process = subprocess.Popen(
            list(argv),
            cwd=BASE_DIR,
            env=dict(env),
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            # Own process group: Ctrl-C reaches only the supervisor, which then stops the children in order,
            # and a signal to the group also reaches the grandchildren (celery's pool, valkey-server).
            start_new_session=True,
            preexec_fn=_die_with_parent if sys.platform.startswith("linux") else None,
        )
        quiet = () if os.environ.get("EIPDASH_RUN_VERBOSE") == "1" else QUIET.get(name, ())
        child = Child(name=name, argv=list(argv), process=process, colour=_COLOURS[len(self.children) % 7],
                      infrastructure=infrastructure, warm_shutdown=warm_shutdown, quiet=quiet,
                      ready_when=ready_when)
        self.children.append(child)
        child.pump = threading.Thread(target=self._pump, args=(child,), daemon=True, name=f"pump-{name}")
        child.pump.start()
        self.say("run", f"started {name} (pid {process.pid})")
        return child

    def _pump(self, child: Child) -> None:
        assert child.process.stdout is not None
        for raw in child.process.stdout:
            line = raw.decode("utf-8", "replace").rstrip("\n")
            child.last_lines.append(line)
            if child.ready_when is not None and child.ready_when.search(line):
                child.ready.set()
            if any(pattern.search(line) for pattern in child.quiet):
                child.hidden += 1
                continue
            self.say(child.name, line, child.colour)

    def exited(self) -> Child | None:
        """The first child that is no longer running, if any."""
        for child in self.children:
            if child.process.poll() is not None:
                return child
        return None

    def stop_all(self) -> None:
        # Clients first (web, watch, beat, worker), then what they talk to (sandbox, redis): a worker
        # stopped mid-pass then never logs errors about emulators that vanished under it.
        clients = [c for c in reversed(self.children) if not c.infrastructure]
        servers = [c for c in reversed(self.children) if c.infrastructure]
        for wave in (clients, servers):
            self._stop_wave([c for c in wave if c.process.poll() is None])
        for child in self.children:
            # Grandchildren that outlived their parent (a celery pool process) still share its group.
            self._signal(child, signal.SIGKILL)

    def _stop_wave(self, running: list[Child]) -> None:
        for child in running:
            child.expected_exit = True
            if child.warm_shutdown:
                # Celery's warm shutdown: the main process waits for the running task, then stops its pool.
                # A SIGTERM to the whole group would kill the pool under the task (WorkerLostError).
                self.say("run", f"{child.name}: warm shutdown (finishing the running pass)")
                try:
                    os.kill(child.process.pid, signal.SIGTERM)
                except ProcessLookupError:
                    pass
            else:
                self._signal(child, signal.SIGTERM)
        started = time.monotonic()
        for child in running:
            grace = WORKER_STOP_GRACE_SECONDS if child.warm_shutdown else STOP_GRACE_SECONDS
            try:
                child.process.wait(timeout=max(0.1, started + grace - time.monotonic()))
            except subprocess.TimeoutExpired:
                self.say("run", f"{child.name} ignored SIGTERM for {grace:.0f}s: killing it")
                self._signal(child, signal.SIGKILL)
                child.process.wait(timeout=5)

    @staticmethod
    def _signal(child: Child, signum: int) -> None:
        try:
            os.killpg(child.process.pid, signum)
        except (ProcessLookupError, PermissionError):
            pass


class Stop(Exception):
    """SIGINT or SIGTERM reached the supervisor."""


# The stop signal that reached the supervisor, "" while none has. A handler's raise can be swallowed: a signal
# handled inside an at-fork hook (logging registers one, and the supervisor forks each child) or a __del__ is
# printed as "Exception ignored" and the code carries on. Every wait checks this too (stop_if_asked).
_stop_asked: list[str] = []


def _raise_stop(signum: int, _frame: object) -> None:
    _stop_asked.append(signal.Signals(signum).name)
    raise Stop(_stop_asked[-1])


def stop_if_asked() -> None:
    """Raise the Stop of a signal whose own raise went astray (see _stop_asked)."""
    if _stop_asked:
        raise Stop(_stop_asked[-1])


def port_is_free(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind(("127.0.0.1", port))
        except OSError:
            return False
        return True


def read_env_file(path: Path) -> dict[str, str]:
    values: dict[str, str] = {}
    for line in path.read_text().splitlines():
        if line.strip() and not line.lstrip().startswith("#") and "=" in line:
            key, value = line.split("=", 1)
            value = value.strip()
            # Values are written shell-quoted where needed (see complete_env_file); read them back the same.
            values[key.strip()] = shlex.split(value)[0] if value[:1] in ("'", '"') else value
    return values


# What a shell needs besides the sandbox's endpoints to run manage.py against this stack (the README's
# `set -a; . var/sandbox/env; .venv/bin/python manage.py launchspec list`): without DATABASE_URL it would
# create an empty var/eipdash.sqlite3, without DJANGO_DEBUG it would refuse to start without a secret key,
# without EIPDASH_KUBECONFIG_DIR `cluster add --kubeconfig var/sandbox/…` would be refused.
SHELL_ENV_KEYS = ("DATABASE_URL", "REDIS_URL", "DJANGO_DEBUG", "DJANGO_SETTINGS_MODULE", "EIPDASH_KUBECONFIG_DIR")


def complete_env_file(path: Path, env: Mapping[str, str]) -> None:
    lines = [f"{key}={shlex.quote(env[key])}" for key in SHELL_ENV_KEYS if env.get(key)]
    with path.open("a") as handle:
        handle.write("# The running stack's database and Redis, for manage.py in a shell (sandbox/run.py)\n")
        handle.write("\n".join(lines) + "\n")


def fresh_sqlite(path: Path) -> None:
    for suffix in ("", "-wal", "-shm", "-journal"):
        Path(f"{path}{suffix}").unlink(missing_ok=True)


def prepare_database(env: Mapping[str, str]) -> tuple[str, bool]:
    """Migrate and ensure the admin user, in this process (one Django start-up instead of two)."""
    os.environ.update(env)
    import django
    from django.core.management import call_command, get_commands

    django.setup()
    call_command("migrate", interactive=False, verbosity=0)
    buffer = io.StringIO()
    call_command("ensure_admin", stdout=buffer)
    # The node watch is supervised only where this checkout has it (it is optional: beat alone converges).
    return buffer.getvalue().strip(), "watch_nodes" in get_commands()


def second_cluster_lines(env: Mapping[str, str]) -> list[str]:
    """The banner's line for the second sandbox cluster (--clusters 2), from the sandbox's env file."""
    described = env.get("SANDBOX_SECOND_CLUSTER")
    if not described:
        return []
    name, _, region = described.partition(":")
    return [f"  second cluster: {name} ({region}), kubeconfig {env.get('SANDBOX_SECOND_KUBECONFIG', '?')}"]


def watch_until(ready: Callable[[], bool], supervisor: Supervisor, timeout: float, what: str) -> None:
    """Wait for `ready` while watching every child: one that dies meanwhile ends the wait at once (ChildFailed),
    whichever child it is, rather than after the timeout or once the stack is up."""
    deadline = time.monotonic() + timeout
    while True:
        stop_if_asked()
        crashed = supervisor.exited()
        if crashed is not None:
            raise ChildFailed(crashed)
        if ready():
            return
        if time.monotonic() > deadline:
            raise RuntimeError(f"not within {timeout:.0f}s: {what}")
        time.sleep(0.1)


def listens(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=0.5):
            return True
    except OSError:
        return False


def wait_for_env_file(path: Path, supervisor: Supervisor) -> dict[str, str]:
    watch_until(path.exists, supervisor, SANDBOX_READY_SECONDS, f"the sandbox wrote {path}")
    return read_env_file(path)


def wait_for_http(url: str, supervisor: Supervisor, timeout: float) -> None:
    def answers() -> bool:
        try:
            with urllib.request.urlopen(url, timeout=2) as response:
                return bool(response.status == 200)
        except (urllib.error.URLError, OSError):
            return False

    watch_until(answers, supervisor, timeout, f"{url} answered 200")


class ChildFailed(Exception):
    def __init__(self, child: Child) -> None:
        super().__init__(child.name)
        self.child = child


def report_crash(supervisor: Supervisor, child: Child) -> None:
    code = child.process.returncode
    how = f"was killed by {signal.Signals(-code).name}" if code < 0 else f"exited with code {code}"
    banner = "!" * 78
    lines = [
        banner,
        f"!! {child.name} {how}, on its own: stopping everything.",
        f"!! command: {' '.join(child.argv)}",
        "!! its last lines:",
        *([f"!!   {line}" for line in child.last_lines] or ["!!   (nothing)"]),
        banner,
    ]
    with supervisor._lock:
        stream = sys.stderr
        for line in lines:
            stream.write((f"\033[1;31m{line}\033[0m" if stream.isatty() else line) + "\n")
        stream.flush()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Run eipdash live against the sandbox (make run).")
    parser.add_argument("--port", type=int, default=int(os.environ.get("EIPDASH_RUN_PORT", "8000")))
    parser.add_argument("--keep-db", action="store_true", help="keep var/sandbox/eipdash.sqlite3 from last run")
    parser.add_argument("--seed", type=int, default=int(os.environ.get("EIPDASH_SANDBOX_SEED", "1")))
    parser.add_argument("--clusters", type=int, choices=(1, 2), default=1,
                        help="2: a second sandbox cluster (sandbox-eu, eu-west-1) on a second Kubernetes emulator")
    parser.add_argument("--ec2-port", type=int, default=None,
                        help="the EC2 emulator's port (default: 5055 when free, else any free port)")
    parser.add_argument("--kube-port", type=int, default=None,
                        help="the Kubernetes emulator's port (default: 6443 when free, else any free port)")
    parser.add_argument("--state-dir", type=Path, default=STATE_DIR,
                        help="the sandbox's env file, kubeconfig, SQLite file and beat schedule (var/sandbox)")
    args = parser.parse_args(argv)
    state_dir: Path = args.state_dir.resolve()
    started = time.monotonic()
    supervisor = Supervisor()

    if not port_is_free(args.port):
        supervisor.say("run", f"port {args.port} is taken: stop what listens there, or set EIPDASH_RUN_PORT")
        return 2
    # A port asked for is that port or nothing: refused here at once (the sandbox refuses it too, should
    # another program take it in between). Without the flag the sandbox takes the usual one or any free one.
    for flag, asked, usual in (("--ec2-port", args.ec2_port, EC2_PORT), ("--kube-port", args.kube_port, KUBE_PORT)):
        if asked is not None and not port_is_free(asked):
            supervisor.say("run", f"port {asked} ({flag}) is taken: stop what listens there, or leave {flag} out "
                                  f"({usual} when it is free, else any free port)")
            return 2

    env = dict(os.environ)
    env.update({"DJANGO_DEBUG": "true", "DJANGO_SETTINGS_MODULE": "eipdash.settings", "PYTHONUNBUFFERED": "1"})
    # The sandbox writes its kubeconfigs in its state directory: the second cluster's row (--clusters 2) names
    # one, and a cluster row may only name a file under EIPDASH_KUBECONFIG_DIR.
    env["EIPDASH_KUBECONFIG_DIR"] = str(state_dir)
    state_dir.mkdir(parents=True, exist_ok=True)
    if not env.get("DATABASE_URL"):
        database = state_dir / "eipdash.sqlite3"
        if not args.keep_db:
            fresh_sqlite(database)
        env["DATABASE_URL"] = f"sqlite:///{database}"
    # prometheus-client's multiprocess files: one directory for web, worker, beat and watch of this host, so
    # that /metrics sums them all. Emptied at every start: a counter must not carry a dead run's samples.
    metrics_dir = state_dir / "prometheus"
    shutil.rmtree(metrics_dir, ignore_errors=True)
    metrics_dir.mkdir()
    env["PROMETHEUS_MULTIPROC_DIR"] = str(metrics_dir)

    on_stop_signals(_raise_stop)
    status = 0
    try:
        login, has_watch = prepare_database(env)
        supervisor.say("run", f"database ready ({time.monotonic() - started:.1f}s)")

        if not env.get("REDIS_URL"):
            redis_port = free_port()
            supervisor.start("redis", [PYTHON, "-m", "sandbox.embedded_redis", "--port", str(redis_port)], env,
                             infrastructure=True)
            watch_until(lambda: listens(redis_port), supervisor, 15, f"Redis listened on {redis_port}")
            env["REDIS_URL"] = f"redis://127.0.0.1:{redis_port}/0"

        # Without --ec2-port/--kube-port the sandbox binds the usual ports itself when they are free (a kubectl
        # pointed at var/sandbox/kubeconfig keeps working), else any free port, and says which: a check here
        # would race with another stack starting at the same time.
        ports = [f"--{name}-port={port}" for name, port in (("ec2", args.ec2_port), ("kube", args.kube_port))
                 if port is not None]
        env_path = state_dir / "env"
        env_path.unlink(missing_ok=True)
        supervisor.start(
            "sandbox",
            [PYTHON, "manage.py", "sandbox", "--simulate", "--seed", str(args.seed), *ports,
             "--state-dir", str(state_dir), "--clusters", str(args.clusters)],
            env,
            infrastructure=True,
        )
        env.update(wait_for_env_file(env_path, supervisor))
        complete_env_file(env_path, env)

        supervisor.start(
            "worker",
            [PYTHON, "-m", "celery", "-A", "eipdash", "worker", "--loglevel", "INFO", "--concurrency", "2",
             "--hostname", f"worker-{os.getpid()}@%h", "--without-gossip", "--without-mingle"],
            env,
            warm_shutdown=True,
        )
        supervisor.start(
            "beat",
            [PYTHON, "-m", "celery", "-A", "eipdash", "beat", "--loglevel", "INFO",
             "--schedule", str(state_dir / "celerybeat-schedule")],
            env,
        )
        if has_watch:
            # Without --cluster: one stream per configured cluster (both with --clusters 2).
            supervisor.start("watch", [PYTHON, "manage.py", "watch_nodes"], env)
        supervisor.start("web", [PYTHON, "manage.py", "runserver", f"127.0.0.1:{args.port}", "--noreload"], env)
        url = f"http://127.0.0.1:{args.port}/"
        wait_for_http(url + "healthz", supervisor, WEB_READY_SECONDS)

        reminder = f"eipdash is live: {url}   {login}   (Ctrl-C stops everything)"
        next_banner = time.monotonic() + BANNER_EVERY_SECONDS
        for line in [
            "",
            "=" * 78,
            f"  eipdash is live: {url}   (ready in {time.monotonic() - started:.1f}s)",
            f"  {login}",
            f"  sandbox: EC2 {env['AWS_ENDPOINT_URL_EC2']}, KUBECONFIG={env['KUBECONFIG']}",
            *second_cluster_lines(env),
            "  Ctrl-C stops everything. Routine lines are hidden (EIPDASH_RUN_VERBOSE=1 shows them).",
            f"  In a shell: set -a; . {env_path}; .venv/bin/python manage.py launchspec list",
            "=" * 78,
            "",
        ]:
            supervisor.say("run", line)

        while True:
            stop_if_asked()
            crashed = supervisor.exited()
            if crashed is not None:
                raise ChildFailed(crashed)
            if time.monotonic() >= next_banner:
                hidden = sum(child.hidden for child in supervisor.children)
                supervisor.say("run", f"{reminder}   ({hidden} routine lines hidden so far)")
                next_banner = time.monotonic() + BANNER_EVERY_SECONDS
            time.sleep(0.2)
    except Stop as stop:
        supervisor.say("run", f"{stop} received: stopping every process")
    except ChildFailed as failed:
        # What the child said last comes before the report (a grandchild may hold the pipe open: bounded).
        if failed.child.pump is not None:
            failed.child.pump.join(timeout=2)
        report_crash(supervisor, failed.child)
        status = 1
    except Exception as error:  # anything else must still stop the children
        supervisor.say("run", f"FAILED: {error!r}: stopping every process")
        status = 1
    finally:
        # A second Ctrl-C while stopping must not leave orphans behind.
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        supervisor.stop_all()
        supervisor.say("run", "all processes stopped")
    return status


if __name__ == "__main__":
    raise SystemExit(main())
