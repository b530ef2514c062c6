"""`alpr ocr-worker`: reads plate crops sent by the OCR coordinator, one at a time, and answers each.

Owns: one DEALER socket on `ocr_jobs` (connects; workers can run on another host over tcp://), one
recogniser (PP-OCRv4 on ONNX Runtime, opened in `service_main`, closed on exit), and a heartbeat that
tells the coordinator it is alive and how many jobs it takes at once (credit). Recognition runs in a
thread so heartbeats keep flowing while a crop is being read.

Must never: take more than `ocr.worker_capacity` jobs at once (the coordinator relies on it to balance
load), or exit on SIGTERM before answering the job in hand. On a graceful stop it says goodbye
(capacity 0) so the coordinator re-sends nothing to it.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import secrets
import socket
import time

import numpy as np

from alpr_ocr.reading import PlateReader, open_reader, recognizer_options
from alpr_shared.lifecycle import ServiceContext
from alpr_shared.logging import get_logger
from alpr_shared.schemas import OcrJob, OcrResult, OcrWorkerReady
from alpr_shared.transport import DealerSocket, TransportError, open_dealer

log = get_logger(__name__)


__all__ = ["Worker", "read_job", "recognizer_options", "service_main"]


def read_job(recognizer: PlateReader, job: OcrJob, worker_id: str) -> OcrResult:
    """Decode the job's crop and read it (runs in the worker's thread)."""
    start = time.perf_counter()
    expected = job.crop_height * job.crop_width * job.crop_channels
    if len(job.crop) != expected or expected == 0:
        text, confidence, alternatives = "", 0.0, []
    else:
        crop = np.frombuffer(job.crop, dtype=np.uint8).reshape(
            job.crop_height, job.crop_width, job.crop_channels
        )
        reading = recognizer.read(crop)
        text, confidence, alternatives = reading.text, reading.confidence, reading.alternatives
    return OcrResult(
        job_id=job.job_id,
        camera_id=job.camera_id,
        track_id=job.track_id,
        text=text,
        confidence=confidence,
        alternatives=alternatives,
        worker_id=worker_id,
        latency_ms=(time.perf_counter() - start) * 1000.0,
    )


class Worker:
    """The worker's loop: take up to `capacity` jobs, read them in threads, answer, heartbeat."""

    def __init__(
        self,
        ctx: ServiceContext,
        recognizer: PlateReader,
        sock: DealerSocket[OcrJob, OcrResult | OcrWorkerReady],
        worker_id: str,
    ) -> None:
        self.ctx = ctx
        self.settings = ctx.settings.ocr
        self.recognizer = recognizer
        self.sock = sock
        self.worker_id = worker_id
        self.capacity = self.settings.worker_capacity
        self.done = 0
        self.in_hand: set[asyncio.Task[OcrResult]] = set()
        self._receiving: asyncio.Task[OcrJob] | None = None
        m = ctx.metrics
        self.jobs = m.counter("jobs_total", "OCR jobs read by this worker", ["outcome"])
        self.seconds = m.histogram(
            "read_seconds",
            "Time to read one crop (all strategies)",
            buckets=(0.005, 0.01, 0.02, 0.05, 0.1, 0.25, 1),
        )
        self.busy = m.gauge("busy_jobs", "Jobs in hand (0 up to ocr.worker_capacity)")

    def hello(self, capacity: int) -> OcrWorkerReady:
        return OcrWorkerReady(
            worker_id=self.worker_id, capacity=capacity, jobs_done=self.done, backend=self.recognizer.backend
        )

    async def _answer(self, task: asyncio.Task[OcrResult]) -> None:
        self.in_hand.discard(task)
        try:
            result = task.result()
        except Exception:
            log.exception("ocr_read_failed")
            self.jobs.labels("failed").inc()
            return
        self.done += 1
        self.jobs.labels("read" if result.text else "empty").inc()
        self.seconds.observe(result.latency_ms / 1000.0)
        await self.sock.send(result, timeout=self.settings.send_timeout_s)

    async def run(self) -> None:
        stopping = self.ctx.stopping
        await self.sock.send(self.hello(self.capacity), timeout=self.settings.send_timeout_s)
        next_beat = time.monotonic() + self.settings.heartbeat_s
        try:
            while not stopping.is_set() or self.in_hand:
                if self._receiving is None and len(self.in_hand) < self.capacity and not stopping.is_set():
                    self._receiving = asyncio.create_task(self.sock.recv())
                waits: set[asyncio.Task[OcrResult] | asyncio.Task[OcrJob]] = set(self.in_hand)
                if self._receiving is not None:
                    waits.add(self._receiving)
                # Wake for a job, a finished read, the heartbeat, or (at most 0.2 s later) a stop.
                timeout = min(0.2, max(0.0, next_beat - time.monotonic()))
                finished, _ = await asyncio.wait(waits, timeout=timeout, return_when=asyncio.FIRST_COMPLETED)
                if self._receiving is not None and self._receiving in finished:
                    job = self._receiving.result()
                    self._receiving = None
                    task = asyncio.create_task(
                        asyncio.to_thread(read_job, self.recognizer, job, self.worker_id)
                    )
                    self.in_hand.add(task)
                for task in [t for t in self.in_hand if t in finished]:
                    await self._answer(task)
                self.busy.set(len(self.in_hand))
                if time.monotonic() >= next_beat:
                    await self.sock.send(self.hello(self.capacity), timeout=self.settings.send_timeout_s)
                    next_beat = time.monotonic() + self.settings.heartbeat_s
                if stopping.is_set() and self._receiving is not None:
                    await self._cancel_receive()
            with contextlib.suppress(TransportError):
                await self.sock.send(self.hello(0), timeout=1.0)
            log.info("ocr_worker_stopped", worker=self.worker_id, jobs=self.done)
        finally:
            await self._cancel_receive()
            for task in self.in_hand:
                task.cancel()

    async def _cancel_receive(self) -> None:
        if self._receiving is None:
            return
        self._receiving.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self._receiving
        self._receiving = None


async def service_main(ctx: ServiceContext) -> None:
    settings = ctx.settings.ocr
    worker_id = f"{socket.gethostname()}-{os.getpid()}-{secrets.token_hex(2)}"
    recognizer = await asyncio.to_thread(open_reader, settings)
    try:
        sock: DealerSocket[OcrJob, OcrResult | OcrWorkerReady] = open_dealer(
            ctx.zmq_context,
            name="ocr_jobs",
            spec=ctx.settings.endpoint("ocr_jobs"),
            default_mode="connect",
            receive_type=OcrJob,
            send_type=OcrResult | OcrWorkerReady,  # type: ignore[arg-type] # a union of message types
            hwm=ctx.settings.endpoints.messages_hwm,
            metrics=ctx.transport_metrics,
            identity=worker_id.encode(),
        )
        with contextlib.closing(sock):
            log.info(
                "ocr_worker_ready",
                worker=worker_id,
                backend=recognizer.backend,
                capacity=settings.worker_capacity,
            )
            ctx.health.set_ready()
            await Worker(ctx, recognizer, sock, worker_id).run()
    finally:
        recognizer.close()
