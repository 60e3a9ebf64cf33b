"""The environment of a `taskflow serve` process, with every variable name spelled once."""

from __future__ import annotations

import os
import socket
from collections.abc import Mapping

# Settings whose variable is not `TASKFLOW_` + the upper-cased name.
_UNPREFIXED = {"database_url": "DATABASE_URL", "amqp_url": "AMQP_URL"}
# Variables of the caller's environment that must never reach a service under test.
_NOT_INHERITED = ("DATABASE_URL", "AMQP_URL", "PORT")
PORT = "port"


def free_port() -> int:
    """A TCP port of 127.0.0.1 that nothing listens on right now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def variable(setting: str) -> str:
    """The environment variable of a setting: `processors` → `TASKFLOW_PROCESSORS`."""
    return _UNPREFIXED.get(setting, f"TASKFLOW_{setting.upper()}")


def service_environment(
    settings: Mapping[str, str | float | int], inherit: Mapping[str, str] | None = None
) -> dict[str, str]:
    """The environment of one service: `inherit` (default: this process's environment)
    without any taskflow variable, then `settings` by setting name (`processors=4`,
    `database_url=...`). A port is chosen when `settings` names none."""
    base = os.environ if inherit is None else inherit
    env = {
        key: value
        for key, value in base.items()
        if not key.startswith("TASKFLOW_") and key not in _NOT_INHERITED
    }
    env[variable(PORT)] = str(free_port())
    env.update({variable(name): str(value) for name, value in settings.items()})
    return env


def port_of(env: Mapping[str, str]) -> int:
    """The HTTP port a service started with `env` listens on."""
    return int(env[variable(PORT)])
