"""The ROUTER/DEALER extension of shared/alpr_shared/transport.py (added for the OCR job channel)."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest
import zmq.asyncio

from alpr_shared.metrics import ServiceMetrics
from alpr_shared.schemas import OcrJob, OcrResult, OcrWorkerReady
from alpr_shared.transport import (
    DealerSocket,
    PeerGone,
    RouterSocket,
    TransportMetrics,
    open_dealer,
    open_router,
)


def test_router_dealer_round_trip_with_identity_and_bad_messages(tmp_path: Path) -> None:
    async def scenario() -> None:
        zctx = zmq.asyncio.Context()
        metrics = ServiceMetrics("ocrtest")
        tm = TransportMetrics(metrics)
        spec = f"ipc://{tmp_path}/jobs.sock"
        router: RouterSocket[OcrResult | OcrWorkerReady, OcrJob] = open_router(
            zctx, name="jobs", spec=spec, default_mode="bind",
            receive_type=OcrResult | OcrWorkerReady,  # type: ignore[arg-type]
            send_type=OcrJob, hwm=100, metrics=tm,
        )  # fmt: skip
        dealer: DealerSocket[OcrJob, OcrResult | OcrWorkerReady] = open_dealer(
            zctx, name="jobs", spec=spec, default_mode="connect", receive_type=OcrJob,
            send_type=OcrResult | OcrWorkerReady,  # type: ignore[arg-type]
            hwm=100, identity=b"w1",
        )  # fmt: skip
        try:
            await dealer.socket.send(b"\x93garbage")  # counted as malformed, skipped
            await dealer.send(OcrWorkerReady(worker_id="w1"))
            peer, hello = await router.recv(timeout=5)
            assert peer == b"w1" and isinstance(hello, OcrWorkerReady)
            job = OcrJob(job_id="j", camera_id="c", track_id=1, crop=b"xyz", crop_height=1, crop_width=1)
            await router.send(peer, job, timeout=5)
            assert await dealer.recv(timeout=5) == job
            with pytest.raises(PeerGone):
                await router.send(b"nobody", job, timeout=5)
            text = metrics.render().decode()
            assert 'alpr_ocrtest_messages_dropped_total{reason="malformed",socket="jobs"} 1.0' in text
        finally:
            dealer.close()
            router.close()
            zctx.destroy(linger=0)

    asyncio.run(asyncio.wait_for(scenario(), 20))
