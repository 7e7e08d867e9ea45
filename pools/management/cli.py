"""What the commands share."""

from __future__ import annotations

import getpass


def cli_actor() -> str:
    """Who ran the command, for the history's actor (pools/audit.py): "cli:<OS user>", or "cli"."""
    try:
        return f"cli:{getpass.getuser()}"
    except (OSError, KeyError):
        return "cli"
