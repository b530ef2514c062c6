"""Free TCP ports for throwaway test servers.

Owns the choice of a port number and nothing else: it never holds a port open, so a port it hands out can
still be taken by someone else before the server binds it. Servers therefore retry with a fresh port when
their first bind fails (see ``PostgresServer`` and ``KafkaBroker``).

Ports are drawn from *below* the kernel's ephemeral range: a port taken from that range (the usual
"bind to port 0" trick) is also what the kernel hands to outgoing client sockets, so a client connection
could occupy it between the server's stop and restart in an outage test.
"""

from __future__ import annotations

import random
import socket
import threading
import time
from pathlib import Path

_LOCAL_PORT_RANGE = Path("/proc/sys/net/ipv4/ip_local_port_range")
# Lowest port we hand out: stays clear of well-known service ports (PostgreSQL 5432, Kafka 9092, ...).
_LOWEST_PORT = 20000
# How many random candidates to try before falling back to a kernel-chosen ephemeral port.
_RANDOM_ATTEMPTS = 50

_issued: set[int] = set()
_issued_lock = threading.Lock()
# Not for security: spreads concurrent test sessions over the range.
_rng = random.Random()


def _ephemeral_low() -> int:
    """Return the first port of the kernel's ephemeral range (32768 when it cannot be read)."""
    try:
        return int(_LOCAL_PORT_RANGE.read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return 32768


def _can_bind(host: str, port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        # Servers bind with SO_REUSEADDR; probe the same way so a port in TIME_WAIT counts as free.
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((host, port))
        except OSError:
            return False
        return True


def free_port(host: str = "127.0.0.1") -> int:
    """Return a TCP port on ``host`` that is free now and was not handed out before in this process."""
    high = _ephemeral_low() - 1
    with _issued_lock:
        if high > _LOWEST_PORT:
            for _ in range(_RANDOM_ATTEMPTS):
                port = _rng.randint(_LOWEST_PORT, high)
                if port not in _issued and _can_bind(host, port):
                    _issued.add(port)
                    return port
        # Fallback: let the kernel choose (from the ephemeral range).
        while True:
            with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
                sock.bind((host, 0))
                port = int(sock.getsockname()[1])
            if port not in _issued:
                _issued.add(port)
                return port


def port_is_open(host: str, port: int, timeout: float = 0.25) -> bool:
    """Return True when something accepts TCP connections on ``host:port``."""
    try:
        with socket.create_connection((host, port), timeout=timeout):
            return True
    except OSError:
        return False


def wait_port_closed(host: str, port: int, timeout: float) -> bool:
    """Wait until nothing listens on ``host:port``; return False if it still does after ``timeout`` s."""
    deadline = time.monotonic() + timeout
    while port_is_open(host, port):
        if time.monotonic() >= deadline:
            return False
        time.sleep(0.02)
    return True
