from __future__ import annotations

import socket
import sys
from http.server import ThreadingHTTPServer
from typing import Any


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
