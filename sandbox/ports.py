from __future__ import annotations

import errno
import socket
import sys
from collections.abc import Callable
from http.server import ThreadingHTTPServer
from typing import Any, TypeVar

# The ports the sandbox's emulators take when they are free (a kubectl pointed at var/sandbox/kubeconfig
# keeps working from one run to the next); when another program has one, any free port.
EC2_PORT = 5055
KUBE_PORT = 6443
# serve_forever's poll: shutdown() waits up to this long, and a stopping sandbox shuts several servers down.
SERVE_POLL = 0.1

_Server = TypeVar("_Server")


def free_port() -> int:
    """A free TCP port on loopback (the kernel picks it; a tiny race with other processes remains)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def wait_for_port(port: int, timeout: float = 15.0) -> None:
    import time

    deadline = time.monotonic() + timeout
    while True:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                return
        except OSError:
            if time.monotonic() > deadline:
                raise TimeoutError(f"nothing listens on 127.0.0.1:{port} after {timeout}s") from None
            time.sleep(0.05)


def start_preferring(start: Callable[[int | None], _Server], preferred: int) -> tuple[_Server, bool]:
    """``start(preferred)``, or ``start(None)`` (any free port) when another program listens on ``preferred``;
    and whether it got ``preferred``. ``start`` binds before it returns, so no other process can take the port
    between a check and the bind: the answer is the bind itself."""
    try:
        return start(preferred), True
    except OSError as error:
        if error.errno != errno.EADDRINUSE:
            raise
    return start(None), False


class LoopbackHTTPServer(ThreadingHTTPServer):
    """The sandbox's HTTP servers (the Kubernetes emulator, the EC2 fault proxy): one thread a request.

    A client that drops its connection (a read timeout, a process killed or shutting down mid-request) is
    the normal weather of a test cluster, not a fault worth a traceback.
    """

    daemon_threads = True

    def handle_error(self, request: Any, client_address: Any) -> None:
        if isinstance(sys.exc_info()[1], ConnectionError):
            return
        super().handle_error(request, client_address)
