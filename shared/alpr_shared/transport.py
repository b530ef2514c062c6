"""ZeroMQ transport between edge stages: typed message sockets with explicit direction and high-water marks.

Endpoints are configuration strings (`ipc:///tmp/alpr/frames.sock`, `tcp://10.0.0.5:5560`). Each socket
role has a documented default direction (docs/architecture.md); a `bind:` or `connect:` prefix overrides it.

Slow-consumer policy (the two kinds of traffic behave differently on purpose):
- Live video (`FrameReady`): PUB/SUB with a small high-water mark. A slow subscriber never stalls ingest:
  ZeroMQ drops at the HWM (silently, on the publisher's side), and the subscriber (`FrameSubscription`)
  drains its queue and keeps only the newest frame(s) per camera, so the oldest frames are the ones
  dropped. It counts both: frames it sheds, and frames that never arrived (gaps in the ring sequence).
- Everything after detection (detections, tracks, OCR jobs/results): never dropped. PUSH/PULL, or PUB with
  `ZMQ_XPUB_NODROP` for fan-out, and a sender that *waits* when the HWM is reached (backpressure that
  propagates upstream, where frames are the ones shed).

Bad input: bytes that do not decode as a message of the socket's type are counted
(`alpr_<service>_messages_dropped_total{reason="malformed"|"version"}`), logged (rate-limited) and dropped;
the receiver carries on. Nothing here raises on a peer's bad message.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Generic, Literal, Self, TypeVar

import zmq
import zmq.asyncio

from alpr_shared.logging import get_logger
from alpr_shared.metrics import ServiceMetrics
from alpr_shared.schemas import Codec, FrameReady, SchemaError, SchemaVersionError, _Message

T = TypeVar("T", bound=_Message)
Mode = Literal["bind", "connect"]
Pattern = Literal["pub", "sub", "push", "pull"]

_ZMQ_TYPES: dict[Pattern, int] = {"pub": zmq.PUB, "sub": zmq.SUB, "push": zmq.PUSH, "pull": zmq.PULL}
_log = get_logger(__name__)


class TransportError(RuntimeError):
    """A socket could not be set up, or a send did not complete in time."""


@dataclass(frozen=True, slots=True)
class Endpoint:
    mode: Mode
    address: str

    @classmethod
    def parse(cls, spec: str, default_mode: Mode) -> Endpoint:
        """`[bind:|connect:]<transport>://<address>` → Endpoint; the prefix overrides `default_mode`."""
        mode: Mode = default_mode
        address = spec.strip()
        for prefix in ("bind:", "connect:"):
            if address.startswith(prefix) and not address.startswith(prefix + "//"):
                mode = "bind" if prefix == "bind:" else "connect"
                address = address[len(prefix) :]
        transport, sep, rest = address.partition("://")
        if not sep or transport not in {"ipc", "tcp", "inproc"} or not rest:
            raise TransportError(
                f"bad endpoint {spec!r}: expected [bind:|connect:]ipc:///path, tcp://host:port or inproc://name"
            )
        return cls(mode, address)

    @property
    def ipc_path(self) -> Path | None:
        return Path(self.address[len("ipc://") :]) if self.address.startswith("ipc://") else None


class TransportMetrics:
    """Counters shared by every socket of a service, labelled by socket role."""

    def __init__(self, metrics: ServiceMetrics) -> None:
        self.sent = metrics.counter("messages_sent_total", "Messages sent on a ZeroMQ socket", ["socket"])
        self.received = metrics.counter(
            "messages_received_total", "Valid messages received on a ZeroMQ socket", ["socket"]
        )
        self.dropped = metrics.counter(
            "messages_dropped_total",
            "Messages dropped: malformed, another schema version, shed by the slow-consumer policy, or lost upstream (gap)",
            ["socket", "reason"],
        )


def _attach(sock: zmq.asyncio.Socket, endpoint: Endpoint, name: str) -> None:
    """Bind or connect as the endpoint says (creating an ipc socket's folder); close the socket on failure."""
    try:
        if endpoint.mode == "bind":
            path = endpoint.ipc_path
            if path is not None:
                path.parent.mkdir(parents=True, exist_ok=True)
            sock.bind(endpoint.address)
        else:
            sock.connect(endpoint.address)
    except zmq.ZMQError as exc:
        sock.close(linger=0)
        raise TransportError(f"cannot {endpoint.mode} {name} socket to {endpoint.address}: {exc}") from exc


class _Inbound(Generic[T]):
    """Decoding with `MessageSocket`'s policy: count malformed / other-version messages, log them at most
    once a second, never raise on a peer's bad message."""

    def __init__(self, name: str, codec: Codec[T], metrics: TransportMetrics | None) -> None:
        self.name = name
        self.codec = codec
        self.metrics = metrics
        self._last_warning = 0.0
        self._suppressed = 0

    def decode(self, data: bytes) -> T | None:
        try:
            message = self.codec.decode(data)
        except SchemaVersionError as exc:
            self.reject("version", exc)
            return None
        except SchemaError as exc:
            self.reject("malformed", exc)
            return None
        if self.metrics is not None:
            self.metrics.received.labels(self.name).inc()
        return message

    def count_drop(self, reason: str, n: int = 1) -> None:
        if self.metrics is not None:
            self.metrics.dropped.labels(self.name, reason).inc(n)

    def reject(self, reason: str, exc: Exception) -> None:
        self.count_drop(reason)
        now = time.monotonic()
        if now - self._last_warning >= 1.0:
            _log.warning(
                "message_dropped",
                socket=self.name,
                reason=reason,
                error=str(exc)[:300],
                suppressed_since_last=self._suppressed,
            )
            self._last_warning = now
            self._suppressed = 0
        else:
            self._suppressed += 1


class MessageSocket(Generic[T]):
    """One ZeroMQ socket carrying messages of type `T` (or a union), owned by one asyncio task group.

    Use as an async context manager or call `close()`; closing never blocks (LINGER 0 for frames, a
    bounded linger for reliable sockets so queued messages get a chance to leave).
    """

    def __init__(
        self,
        context: zmq.asyncio.Context,
        *,
        name: str,
        pattern: Pattern,
        endpoint: Endpoint,
        message_type: type[T],
        hwm: int,
        metrics: TransportMetrics | None = None,
        reliable: bool = False,
        linger_ms: int = 0,
    ) -> None:
        self.name = name
        self.pattern = pattern
        self.endpoint = endpoint
        self.reliable = reliable
        self._codec: Codec[T] = Codec(message_type)
        self._metrics = metrics
        self._inbound = _Inbound(name, self._codec, metrics)
        sock = context.socket(_ZMQ_TYPES[pattern])
        sock.setsockopt(zmq.LINGER, linger_ms)
        if pattern in ("pub", "push"):
            sock.setsockopt(zmq.SNDHWM, hwm)
            if pattern == "pub" and reliable:
                # Block (we await) instead of dropping at the HWM: fan-out that must not lose messages.
                sock.setsockopt(zmq.XPUB_NODROP, 1)
        else:
            sock.setsockopt(zmq.RCVHWM, hwm)
            if pattern == "sub":
                sock.setsockopt(zmq.SUBSCRIBE, b"")
        _attach(sock, endpoint, name)
        self.socket: zmq.asyncio.Socket = sock
        # A synchronous view of the same socket, for draining what is already queued without awaiting.
        self._sync_view: zmq.Socket[bytes] = zmq.Socket.shadow(sock.underlying)

    # --- sending --------------------------------------------------------------------------------------

    async def send(self, message: T, timeout: float | None = None) -> None:
        """Send one message. Reliable sockets wait while the peer is at its HWM (up to `timeout`, then
        `TransportError`); best-effort ones never wait."""
        data = self._codec.encode(message)
        try:
            if self.pattern == "push":
                await asyncio.wait_for(self.socket.send(data, copy=False), timeout)
            elif self.reliable:
                await asyncio.wait_for(self._send_nodrop(data), timeout)
            else:
                # PUB at its HWM drops inside ZeroMQ without telling us; subscribers see the gap
                # (`FrameSubscription` counts it).
                await self.socket.send(data, flags=zmq.NOBLOCK, copy=False)
        except TimeoutError as exc:
            raise TransportError(
                f"{self.name}: peer did not accept a message within {timeout}s (HWM reached)"
            ) from exc
        if self._metrics is not None:
            self._metrics.sent.labels(self.name).inc()

    async def _send_nodrop(self, data: bytes) -> None:
        # A PUB with XPUB_NODROP reports itself always writable and raises EAGAIN at the HWM instead of
        # dropping, so there is no readiness to await: retry with a short, growing pause.
        pause = 0.0005
        while True:
            try:
                await self.socket.send(data, flags=zmq.NOBLOCK, copy=False)
            except zmq.Again:
                await asyncio.sleep(pause)
                pause = min(pause * 2, 0.05)
            else:
                return

    # --- receiving ------------------------------------------------------------------------------------

    def _decode(self, data: bytes) -> T | None:
        return self._inbound.decode(data)

    def _count_drop(self, reason: str, n: int = 1) -> None:
        self._inbound.count_drop(reason, n)

    async def recv(self, timeout: float | None = None) -> T:
        """The next valid message; malformed ones are counted and skipped. `TimeoutError` after `timeout`."""
        deadline = None if timeout is None else time.monotonic() + timeout
        while True:
            remaining = None if deadline is None else max(0.0, deadline - time.monotonic())
            data = await asyncio.wait_for(self.socket.recv(), remaining)
            message = self._decode(data)
            if message is not None:
                return message

    def drain(self, limit: int) -> list[T]:
        """Every valid message already queued (up to `limit`), without waiting."""
        out: list[T] = []
        while len(out) < limit:
            try:
                data = self._sync_view.recv(zmq.NOBLOCK)
            except zmq.Again:
                break
            message = self._decode(data)
            if message is not None:
                out.append(message)
        return out

    def count_shed(self, n: int) -> None:
        """Record messages dropped by the caller's slow-consumer policy (e.g. old frames)."""
        if n:
            self._count_drop("shed", n)

    def close(self) -> None:
        self.socket.close()

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(self, *exc: object) -> None:
        self.close()


def keep_newest_per_camera(
    frames: Iterable[FrameReady], per_camera: int = 1
) -> tuple[list[FrameReady], list[FrameReady]]:
    """Slow-consumer policy for live video: keep the newest `per_camera` frames of each camera, in arrival
    order, and return (kept, shed). Frames are compared by their ring sequence within the same epoch."""
    by_camera: dict[str, list[FrameReady]] = {}
    order: list[FrameReady] = list(frames)
    for frame in order:
        by_camera.setdefault(frame.camera_id, []).append(frame)
    kept_ids: set[int] = set()
    for camera_frames in by_camera.values():
        newest = sorted(camera_frames, key=lambda f: (f.published_at_ns, f.frame.seq))[-per_camera:]
        kept_ids.update(id(f) for f in newest)
    kept = [f for f in order if id(f) in kept_ids]
    shed = [f for f in order if id(f) not in kept_ids]
    return kept, shed


class FrameSubscription:
    """The receiving half of the live-video policy, as detect (and `alpr tap`) use it.

    `next_batch()` waits for a frame, takes whatever else is already queued, keeps the newest
    `per_camera` frames of each camera and counts the rest as shed. It also counts frames that never
    arrived (ZeroMQ dropped them at the publisher's HWM, or we joined late) from gaps in each ring's
    sequence numbers, so every lost frame shows up in `messages_dropped_total`.
    """

    def __init__(
        self, socket: MessageSocket[FrameReady], *, per_camera: int = 1, drain_limit: int = 256
    ) -> None:
        self.socket = socket
        self.per_camera = per_camera
        self.drain_limit = drain_limit
        self._last: dict[tuple[str, int], int] = {}
        self.shed = 0
        self.missing = 0

    async def next_batch(self, timeout: float | None = None) -> list[FrameReady]:
        first = await self.socket.recv(timeout=timeout)
        queued = [first, *self.socket.drain(self.drain_limit)]
        for message in queued:
            key = (message.frame.segment, message.frame.epoch)
            previous = self._last.get(key)
            if previous is not None and message.frame.seq > previous + 1:
                gap = message.frame.seq - previous - 1
                self.missing += gap
                self.socket._count_drop("gap", gap)
            if previous is None or message.frame.seq > previous:
                self._last[key] = message.frame.seq
        kept, shed = keep_newest_per_camera(queued, self.per_camera)
        self.shed += len(shed)
        self.socket.count_shed(len(shed))
        return kept


def open_socket(
    context: zmq.asyncio.Context,
    *,
    name: str,
    pattern: Pattern,
    spec: str,
    default_mode: Mode,
    message_type: type[T],
    hwm: int,
    metrics: TransportMetrics | None = None,
    reliable: bool = False,
) -> MessageSocket[T]:
    """Parse an endpoint string and open a socket on it (the one place endpoints turn into sockets)."""
    return MessageSocket(
        context,
        name=name,
        pattern=pattern,
        endpoint=Endpoint.parse(spec, default_mode),
        message_type=message_type,
        hwm=hwm,
        metrics=metrics,
        reliable=reliable,
        # Reliable sockets get a moment on close to flush what is queued; frames are not worth waiting for.
        linger_ms=2000 if reliable or pattern == "push" else 0,
    )


# --- ROUTER / DEALER: addressed request/reply with credit -------------------------------------------------

R = TypeVar("R", bound=_Message)
S = TypeVar("S", bound=_Message)


class PeerGone(TransportError):
    """A ROUTER send named a peer that is no longer connected (it stopped, crashed or never was)."""


class _PeerSocket(Generic[R, S]):
    """Shared part of ROUTER and DEALER: typed multipart messages with the same codec and the same
    malformed/version counting as `MessageSocket`. Receives `R`, sends `S` (each may be a union)."""

    _zmq_type: int

    def __init__(
        self,
        context: zmq.asyncio.Context,
        *,
        name: str,
        endpoint: Endpoint,
        receive_type: type[R],
        send_type: type[S],
        hwm: int,
        metrics: TransportMetrics | None = None,
        identity: bytes | None = None,
        linger_ms: int = 0,
    ) -> None:
        self.name = name
        self.endpoint = endpoint
        self._inbound = _Inbound(name, Codec(receive_type), metrics)
        self._outbound: Codec[S] = Codec(send_type)
        self._metrics = metrics
        sock = context.socket(self._zmq_type)
        sock.setsockopt(zmq.LINGER, linger_ms)
        sock.setsockopt(zmq.SNDHWM, hwm)
        sock.setsockopt(zmq.RCVHWM, hwm)
        if identity is not None:
            sock.setsockopt(zmq.IDENTITY, identity)
        self._configure(sock)
        _attach(sock, endpoint, name)
        self.socket: zmq.asyncio.Socket = sock

    def _configure(self, sock: zmq.asyncio.Socket) -> None:
        """Socket-type specific options, before bind/connect."""

    def _sent(self) -> None:
        if self._metrics is not None:
            self._metrics.sent.labels(self.name).inc()

    def _decode_frames(self, frames: list[bytes]) -> tuple[bytes, R] | None:
        """(peer identity or b"", message) from a multipart message, or None (counted) if it is bad."""
        if len(frames) == 2:
            peer, data = frames
        elif len(frames) == 1:
            peer, data = b"", frames[0]
        else:
            self._inbound.reject("malformed", SchemaError(f"expected 1 or 2 frames, got {len(frames)}"))
            return None
        message = self._inbound.decode(data)
        return None if message is None else (peer, message)

    def close(self) -> None:
        self.socket.close()

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(self, *exc: object) -> None:
        self.close()


class RouterSocket(_PeerSocket[R, S]):
    """The hub of a ROUTER/DEALER channel (e.g. the OCR coordinator): every received message carries the
    identity of the peer that sent it, and every send names a peer. Sending to a peer that has gone raises
    `PeerGone` (ROUTER_MANDATORY) instead of dropping the message silently."""

    _zmq_type = zmq.ROUTER

    def _configure(self, sock: zmq.asyncio.Socket) -> None:
        sock.setsockopt(zmq.ROUTER_MANDATORY, 1)

    async def recv(self, timeout: float | None = None) -> tuple[bytes, R]:
        """(peer identity, next valid message); bad ones are counted and skipped."""
        deadline = None if timeout is None else time.monotonic() + timeout
        while True:
            remaining = None if deadline is None else max(0.0, deadline - time.monotonic())
            frames = await asyncio.wait_for(self.socket.recv_multipart(), remaining)
            decoded = self._decode_frames(frames)
            if decoded is not None and decoded[0]:
                return decoded

    async def send(self, peer: bytes, message: S, timeout: float | None = None) -> None:
        data = self._outbound.encode(message)
        try:
            await asyncio.wait_for(self.socket.send_multipart([peer, data], copy=False), timeout)
        except zmq.ZMQError as exc:
            if exc.errno == zmq.EHOSTUNREACH:
                raise PeerGone(f"{self.name}: peer {peer!r} is not connected") from exc
            raise TransportError(f"{self.name}: send to {peer!r} failed: {exc}") from exc
        except TimeoutError as exc:
            raise TransportError(
                f"{self.name}: peer {peer!r} did not accept a message within {timeout}s"
            ) from exc
        self._sent()


class DealerSocket(_PeerSocket[R, S]):
    """A spoke of a ROUTER/DEALER channel (e.g. an OCR worker): sends and receives plain messages; the
    ROUTER sees them under this socket's identity (random unless given)."""

    _zmq_type = zmq.DEALER

    async def recv(self, timeout: float | None = None) -> R:
        deadline = None if timeout is None else time.monotonic() + timeout
        while True:
            remaining = None if deadline is None else max(0.0, deadline - time.monotonic())
            frames = await asyncio.wait_for(self.socket.recv_multipart(), remaining)
            decoded = self._decode_frames(frames)
            if decoded is not None:
                return decoded[1]

    async def send(self, message: S, timeout: float | None = None) -> None:
        data = self._outbound.encode(message)
        try:
            await asyncio.wait_for(self.socket.send(data, copy=False), timeout)
        except TimeoutError as exc:
            raise TransportError(f"{self.name}: peer did not accept a message within {timeout}s") from exc
        self._sent()


def open_router(
    context: zmq.asyncio.Context,
    *,
    name: str,
    spec: str,
    default_mode: Mode,
    receive_type: type[R],
    send_type: type[S],
    hwm: int,
    metrics: TransportMetrics | None = None,
) -> RouterSocket[R, S]:
    """Parse an endpoint string and open the ROUTER side of a channel on it."""
    return RouterSocket(
        context,
        name=name,
        endpoint=Endpoint.parse(spec, default_mode),
        receive_type=receive_type,
        send_type=send_type,
        hwm=hwm,
        metrics=metrics,
    )


def open_dealer(
    context: zmq.asyncio.Context,
    *,
    name: str,
    spec: str,
    default_mode: Mode,
    receive_type: type[R],
    send_type: type[S],
    hwm: int,
    metrics: TransportMetrics | None = None,
    identity: bytes | None = None,
) -> DealerSocket[R, S]:
    """Parse an endpoint string and open a DEALER side of a channel on it (messages queued for the hub
    get a moment to leave on close)."""
    return DealerSocket(
        context,
        name=name,
        endpoint=Endpoint.parse(spec, default_mode),
        receive_type=receive_type,
        send_type=send_type,
        hwm=hwm,
        metrics=metrics,
        identity=identity,
        linger_ms=1000,
    )
