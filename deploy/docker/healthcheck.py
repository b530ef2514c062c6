#!/usr/bin/env python3
"""Container health check: asks the running `alpr <service>` for /health/ready on its metrics port.

Installed in the images as `alpr-healthcheck` and used by their HEALTHCHECK. It finds the service from
the container's main command line (`alpr <service> [--config F] [--metrics-port N]`, under tini as PID 1),
loads the same configuration the service loaded (file, then ALPR_* environment) and asks
`http://127.0.0.1:<services.<name>.metrics_port>/health/ready`. So a port changed in the configuration
or by `--metrics-port` never needs a second edit here. Exit 0: ready; 1: not ready, or no alpr service
is running in this container (a one-shot command such as `alpr models verify` has no health).

`ALPR_HEALTH_URL` overrides everything (e.g. `http://127.0.0.1:9105/health/live`); `ALPR_HEALTH_PID` reads
another process's command line than PID 1 (a container whose init is not the service's parent).
"""

from __future__ import annotations

import os
import sys
import urllib.error
import urllib.request
from collections.abc import Sequence
from pathlib import Path

TIMEOUT_S = 2.0


def service_from_cmdline(argv: Sequence[str], services: Sequence[str]) -> tuple[str, str | None, int | None]:
    """(service, config path, metrics port override) from a command line such as
    `tini -- alpr ocr-worker --config /etc/alpr/alpr.yaml --metrics-port 0`."""
    args = list(argv)
    for i, arg in enumerate(args):
        if Path(arg).name == "alpr" and i + 1 < len(args) and args[i + 1] in services:
            service, rest = args[i + 1], args[i + 2 :]
            break
    else:
        raise LookupError(f"no `alpr <service>` in the command line {' '.join(args)!r}")
    config: str | None = None
    port: int | None = None
    for j, arg in enumerate(rest):
        value = rest[j + 1] if j + 1 < len(rest) else None
        if arg in {"--config", "-c"} and value is not None:
            config = value
        elif arg.startswith("--config="):
            config = arg.split("=", 1)[1]
        elif arg == "--metrics-port" and value is not None:
            port = int(value)
        elif arg.startswith("--metrics-port="):
            port = int(arg.split("=", 1)[1])
    return service, config, port


def _proc_cmdline(pid: int = 1) -> list[str]:
    raw = Path(f"/proc/{pid}/cmdline").read_bytes()
    return [part.decode(errors="replace") for part in raw.split(b"\0") if part]


def service_commands() -> list[str]:
    """`alpr` service commands: one per `services:` section (ocr_worker → ocr-worker). Only the settings
    module is imported, not the whole CLI: the check runs every few seconds in every container."""
    from alpr_shared.settings import ServicesSettings  # noqa: PLC0415 - the image's package, when checking

    return [name.replace("_", "-") for name in ServicesSettings.model_fields]


def health_url(argv: Sequence[str]) -> str:
    """The readiness URL of the service this command line runs."""
    from alpr_shared.settings import load_settings  # noqa: PLC0415

    service, config, port = service_from_cmdline(argv, service_commands())
    settings = load_settings(config)
    own = getattr(settings.services, service.replace("-", "_"))
    if port is None:
        port = own.metrics_port
    if port == 0:
        raise LookupError(f"alpr {service} picks a free metrics port (0): set ALPR_HEALTH_URL instead")
    return f"http://127.0.0.1:{port}/health/ready"


def main() -> int:
    try:
        pid = int(os.environ.get("ALPR_HEALTH_PID", "1"))
        url = os.environ.get("ALPR_HEALTH_URL") or health_url(_proc_cmdline(pid))
    except (LookupError, OSError, ValueError) as exc:
        print(f"alpr-healthcheck: {exc}", file=sys.stderr)  # noqa: T201 - Docker shows it in `inspect`
        return 1
    if not url.startswith("http://"):
        print(f"alpr-healthcheck: {url!r} is not an http:// URL", file=sys.stderr)  # noqa: T201
        return 1
    try:
        with urllib.request.urlopen(url, timeout=TIMEOUT_S) as response:  # noqa: S310 - http only, checked above
            return 0 if response.status == 200 else 1
    except urllib.error.HTTPError as exc:
        body = exc.read().decode(errors="replace").strip()
        exc.close()
        print(f"alpr-healthcheck: {url} answered {exc.code}: {body}", file=sys.stderr)  # noqa: T201
        return 1
    except (urllib.error.URLError, OSError) as exc:
        print(f"alpr-healthcheck: {url}: {exc}", file=sys.stderr)  # noqa: T201
        return 1


if __name__ == "__main__":
    sys.exit(main())
