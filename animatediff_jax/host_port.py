"""`host:port` addresses (a multi-host run's coordinator): one parser for the config check and the join."""
from __future__ import annotations

import re

from animatediff_jax.errors import UsageError

ADDRESS = re.compile(r"(\[[0-9A-Fa-f:.]+\]|[A-Za-z0-9_.-]+):(\d{1,5})")  # name or IPv4, or [IPv6]; then the port


def split_host_port(address: str, key: str) -> tuple[str, int]:
    """("host", port) of `address` ("gpu-0:12345", "10.0.0.1:1234", "[::1]:1234"; IPv6 without brackets);
    UsageError naming `key` for anything else, or a port outside 1..65535."""
    match = ADDRESS.fullmatch(address)
    if match is None or not 1 <= int(match.group(2)) <= 65535:
        raise UsageError(f"{key} {address!r}: expected host:port (a port 1-65535; an IPv6 host in brackets, "
                         "quoted in YAML: '[::1]:1234')")
    return match.group(1).strip("[]"), int(match.group(2))
