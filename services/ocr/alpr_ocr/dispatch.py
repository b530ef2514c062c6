"""Job distribution from the OCR coordinator to its workers: credit-based load balancing with re-sends.

Owns: the queue of jobs waiting for a worker, the jobs in flight (which worker, since when, which
attempt) and what the coordinator knows of each worker. Pure state with the clock passed in; the
coordinator's socket loop (`service.py`) feeds it messages and sends what it hands out.

- Workers announce themselves (`OcrWorkerReady`, on start and as a heartbeat) with their capacity. A
  worker is sent at most `capacity` unanswered jobs, so work goes to idle workers first.
- A job not answered within `job_timeout_s` goes back to the front of the queue with `attempt + 1`, to
  another worker where one is free; after `max_attempts` it is given up (counted).
- The first answer to a job wins; a late answer from a slow worker for a job already answered elsewhere
  is discarded, so each read arrives once.
- A worker silent for `worker_expiry_s`, whose socket is gone, or that says goodbye (capacity 0) is
  forgotten, and its unanswered jobs are re-queued at once.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass, field

import msgspec

from alpr_shared.schemas import OcrJob, OcrResult, OcrWorkerReady


@dataclass
class WorkerState:
    identity: bytes
    worker_id: str
    capacity: int
    last_seen_s: float
    outstanding: dict[str, float] = field(default_factory=dict)  # job id -> sent at
    done: int = 0
    latency_ms: float = 0.0  # exponentially weighted

    @property
    def free(self) -> int:
        return max(0, self.capacity - len(self.outstanding))


@dataclass
class InFlight:
    job: OcrJob
    worker: bytes
    deadline_s: float
    sent_s: float


@dataclass(frozen=True, slots=True)
class DispatchOptions:
    job_timeout_s: float = 2.0
    max_attempts: int = 3
    max_queue: int = 1000
    worker_expiry_s: float = 5.0


@dataclass
class DispatchCounters:
    resent: int = 0
    given_up: int = 0
    duplicates: int = 0
    shed: int = 0
    workers_lost: int = 0


class Dispatcher:
    def __init__(self, options: DispatchOptions) -> None:
        self.options = options
        self.queue: deque[OcrJob] = deque()
        self.in_flight: dict[str, InFlight] = {}
        self.workers: dict[bytes, WorkerState] = {}
        self.counters = DispatchCounters()
        self._avoid: dict[str, bytes] = {}  # job id -> worker that let it time out

    # --- inputs ---------------------------------------------------------------------------------------

    def submit(self, job: OcrJob) -> OcrJob | None:
        """Queue a job; returns the job shed to make room (the oldest waiting one), if any."""
        self.queue.append(job)
        if len(self.queue) > self.options.max_queue:
            self.counters.shed += 1
            return self.queue.popleft()
        return None

    def on_ready(self, identity: bytes, message: OcrWorkerReady, now_s: float) -> list[OcrJob]:
        """A worker's hello/heartbeat/goodbye; returns jobs re-queued because the worker left."""
        if message.capacity <= 0:
            return self.drop_worker(identity)
        worker = self.workers.get(identity)
        if worker is None:
            self.workers[identity] = WorkerState(identity, message.worker_id, message.capacity, now_s)
        else:
            worker.capacity = message.capacity
            worker.last_seen_s = now_s
        return []

    def on_result(self, identity: bytes, result: OcrResult, now_s: float) -> OcrResult | None:
        """The result if it is the first answer to a job in flight, else None (late duplicate)."""
        worker = self.workers.get(identity)
        if worker is not None:
            sent = worker.outstanding.pop(result.job_id, None)
            worker.last_seen_s = now_s
            worker.done += 1
            if sent is not None:
                latency = (now_s - sent) * 1000.0
                worker.latency_ms = latency if worker.done == 1 else 0.8 * worker.latency_ms + 0.2 * latency
        flight = self.in_flight.pop(result.job_id, None)
        if flight is None:
            if any(job.job_id == result.job_id for job in self.queue):
                # Answered late while waiting for its re-send: take it and cancel the re-send.
                self.queue = deque(job for job in self.queue if job.job_id != result.job_id)
                self._avoid.pop(result.job_id, None)
                return result
            self.counters.duplicates += 1
            return None
        self._avoid.pop(result.job_id, None)
        return result

    # --- time -----------------------------------------------------------------------------------------

    def expire(self, now_s: float) -> tuple[list[OcrJob], list[OcrJob]]:
        """Handle timeouts: (jobs re-queued, jobs given up). Also forgets silent workers."""
        requeued: list[OcrJob] = []
        given_up: list[OcrJob] = []
        for identity, worker in list(self.workers.items()):
            if now_s - worker.last_seen_s > self.options.worker_expiry_s:
                requeued.extend(self.drop_worker(identity))
        for job_id, flight in list(self.in_flight.items()):
            if now_s < flight.deadline_s:
                continue
            del self.in_flight[job_id]
            if flight.job.attempt >= self.options.max_attempts:
                self.counters.given_up += 1
                self._avoid.pop(job_id, None)
                given_up.append(flight.job)
                continue
            self._avoid[job_id] = flight.worker
            retry = msgspec.structs.replace(flight.job, attempt=flight.job.attempt + 1)
            self.queue.appendleft(retry)
            self.counters.resent += 1
            requeued.append(retry)
        return requeued, given_up

    def drop_worker(self, identity: bytes) -> list[OcrJob]:
        """Forget a worker (gone, silent or leaving); its unanswered jobs go back to the queue front."""
        worker = self.workers.pop(identity, None)
        if worker is None:
            return []
        self.counters.workers_lost += 1
        requeued: list[OcrJob] = []
        for job_id in worker.outstanding:
            flight = self.in_flight.get(job_id)
            if flight is None or flight.worker != identity:
                continue  # already answered, or re-sent to another worker after a timeout
            del self.in_flight[job_id]
            retry = msgspec.structs.replace(flight.job, attempt=flight.job.attempt + 1)
            self.queue.appendleft(retry)
            self.counters.resent += 1
            requeued.append(retry)
        return requeued

    # --- outputs --------------------------------------------------------------------------------------

    def assign(self, now_s: float) -> list[tuple[bytes, OcrJob]]:
        """Hand waiting jobs to workers with free capacity (the least loaded, then the fastest, first)."""
        out: list[tuple[bytes, OcrJob]] = []
        while self.queue:
            free = [w for w in self.workers.values() if w.free > 0]
            if not free:
                break
            job = self.queue[0]
            avoid = self._avoid.get(job.job_id)
            preferred = [w for w in free if w.identity != avoid] or free
            worker = min(
                preferred, key=lambda w: (len(w.outstanding) / w.capacity, w.latency_ms, w.worker_id)
            )
            self.queue.popleft()
            worker.outstanding[job.job_id] = now_s
            self.in_flight[job.job_id] = InFlight(
                job, worker.identity, now_s + self.options.job_timeout_s, now_s
            )
            out.append((worker.identity, job))
        return out

    def unsent(self, identity: bytes, job: OcrJob) -> None:
        """A send to `identity` failed (peer gone): put the job back and forget the worker."""
        flight = self.in_flight.pop(job.job_id, None)
        worker = self.workers.get(identity)
        if worker is not None:
            worker.outstanding.pop(job.job_id, None)
        if flight is not None:
            self.queue.appendleft(job)
        self.drop_worker(identity)

    @property
    def depth(self) -> int:
        return len(self.queue)

    @property
    def capacity(self) -> int:
        return sum(w.capacity for w in self.workers.values())
