"""A service used by the lifecycle tests: runs in its own process through `run_service`.

Its behaviour is chosen by argv: `drain` finishes in-flight work on SIGTERM; `stubborn` ignores the stop
request (to exercise the drain timeout); every mode registers a reload hook that prints the new settings.
"""

from __future__ import annotations

import asyncio
import sys
from pathlib import Path

from alpr_shared.lifecycle import ServiceContext, run_service
from alpr_shared.settings import AlprSettings, load_settings


def main() -> int:
    mode, config = sys.argv[1], Path(sys.argv[2])
    settings = load_settings(config)

    async def service_main(ctx: ServiceContext) -> None:
        async def on_reload(new: AlprSettings) -> None:
            print(f"RELOADED cameras={[c.id for c in new.cameras]}", flush=True)

        ctx.on_reload(on_reload)
        ctx.health.set_ready()
        print("READY", flush=True)
        if mode == "stubborn":
            await asyncio.sleep(3600)
        await ctx.stopping.wait()
        await asyncio.sleep(0.2)  # "in-flight work" finishing after the stop request
        print("DRAINED", flush=True)

    return run_service("ingest", settings, service_main, config_path=config, metrics_port=0)


if __name__ == "__main__":
    sys.exit(main())
