"""ZeroMQ message sockets: endpoint strings, the slow-consumer policy, and bad input counted and dropped."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path

import msgspec
import pytest
import zmq
import zmq.asyncio

from alpr_shared.metrics import ServiceMetrics
from alpr_shared.schemas import SCHEMA_VERSION, Codec, FrameReady, FrameRef, PlateEvent
from alpr_shared.transport import (
    Endpoint,
    FrameSubscription,
    MessageSocket,
    TransportError,
    TransportMetrics,
    keep_newest_per_camera,
    open_socket,
)


def _frame(camera: str, seq: int) -> FrameReady:
    ref = FrameRef(segment=f"alpr.t.{camera}", epoch=1, slot=seq % 4, seq=seq, height=2, width=2, channels=3)
    return FrameReady(camera_id=camera, frame=ref, captured_at_ns=seq, published_at_ns=seq)


@pytest.mark.parametrize(
    ("spec", "default", "expected"),
    [
        ("ipc:///tmp/a.sock", "bind", Endpoint("bind", "ipc:///tmp/a.sock")),
        ("connect:ipc:///tmp/a.sock", "bind", Endpoint("connect", "ipc:///tmp/a.sock")),
        ("bind:tcp://*:5555", "connect", Endpoint("bind", "tcp://*:5555")),
        ("  tcp://10.0.0.5:5555 ", "connect", Endpoint("connect", "tcp://10.0.0.5:5555")),
    ],
)
def test_endpoint_parse(spec: str, default: str, expected: Endpoint) -> None:
    assert Endpoint.parse(spec, default) == expected  # type: ignore[arg-type]


@pytest.mark.parametrize("spec", ["", "frames.sock", "udp://x:1", "bind:", "ipc://"])
def test_bad_endpoint_is_rejected_with_the_expected_forms(spec: str) -> None:
    with pytest.raises(TransportError, match="expected"):
        Endpoint.parse(spec, "bind")


def test_keep_newest_per_camera_sheds_the_oldest() -> None:
    frames = [_frame("a", 1), _frame("b", 1), _frame("a", 2), _frame("a", 3), _frame("b", 2)]
    kept, shed = keep_newest_per_camera(frames)
    assert [(f.camera_id, f.frame.seq) for f in kept] == [("a", 3), ("b", 2)]
    assert [(f.camera_id, f.frame.seq) for f in shed] == [("a", 1), ("b", 1), ("a", 2)]
    kept, shed = keep_newest_per_camera(frames, per_camera=2)
    assert [(f.camera_id, f.frame.seq) for f in kept] == [("b", 1), ("a", 2), ("a", 3), ("b", 2)]
    assert keep_newest_per_camera([]) == ([], [])


@pytest.fixture
async def zctx() -> AsyncIterator[zmq.asyncio.Context]:
    ctx = zmq.asyncio.Context()
    yield ctx
    ctx.destroy(linger=0)


def _dropped(metrics: ServiceMetrics, reason: str, socket: str = "events") -> float:
    value = metrics.registry.get_sample_value(
        "alpr_test_messages_dropped_total", {"socket": socket, "reason": reason}
    )
    return value or 0.0


async def test_malformed_bytes_on_a_socket_are_counted_and_dropped(
    zctx: zmq.asyncio.Context, tmp_path: Path
) -> None:
    metrics = ServiceMetrics("test")
    tm = TransportMetrics(metrics)
    address = f"ipc://{tmp_path}/events.sock"
    pull: MessageSocket[PlateEvent] = open_socket(
        zctx,
        name="events",
        pattern="pull",
        spec=address,
        default_mode="bind",
        message_type=PlateEvent,
        hwm=100,
        metrics=tm,
    )
    raw = zctx.socket(zmq.PUSH)
    raw.connect(address)
    good = PlateEvent(
        event_id="e",
        revision=1,
        camera_id="c",
        site_id="s",
        plate="ABC",
        plate_raw="ABC",
        region="us",
        format_valid=True,
        confidence=0.9,
        first_seen_ns=1,
        last_seen_ns=1,
        track_id=1,
    )
    codec: Codec[PlateEvent] = Codec(PlateEvent)
    wrong_version = msgspec.msgpack.decode(codec.encode(good))
    wrong_version["schema_version"] = SCHEMA_VERSION + 1
    try:
        await raw.send(b"\x00garbage")
        await raw.send(msgspec.msgpack.encode(wrong_version))
        await raw.send(
            Codec(FrameReady).encode(_frame("a", 1))
        )  # a valid message of the wrong type for this socket
        await raw.send(codec.encode(good))
        received = await pull.recv(timeout=5)
    finally:
        raw.close(linger=0)
        pull.close()
    assert received == good
    assert _dropped(metrics, "malformed") == 2
    assert _dropped(metrics, "version") == 1
    assert metrics.registry.get_sample_value("alpr_test_messages_received_total", {"socket": "events"}) == 1


async def test_recv_times_out(zctx: zmq.asyncio.Context, tmp_path: Path) -> None:
    sub: MessageSocket[FrameReady]
    async with open_socket(
        zctx,
        name="frames",
        pattern="sub",
        spec=f"ipc://{tmp_path}/f.sock",
        default_mode="bind",
        message_type=FrameReady,
        hwm=4,
    ) as sub:
        with pytest.raises(TimeoutError):
            await sub.recv(timeout=0.05)


async def test_reliable_push_waits_instead_of_dropping(zctx: zmq.asyncio.Context, tmp_path: Path) -> None:
    """With nobody pulling, a PUSH socket blocks at the HWM and the send times out — nothing is
    silently discarded."""
    push: MessageSocket[FrameReady] = open_socket(
        zctx,
        name="detections",
        pattern="push",
        spec=f"ipc://{tmp_path}/d.sock",
        default_mode="bind",
        message_type=FrameReady,
        hwm=1,
    )
    try:
        with pytest.raises(TransportError, match="did not accept a message within"):
            await push.send(_frame("a", 1), timeout=0.2)
    finally:
        push.close()


async def test_frames_pub_sub_drain_and_shed(zctx: zmq.asyncio.Context, tmp_path: Path) -> None:
    metrics = ServiceMetrics("test")
    pub, sub = await _connected_pair(zctx, f"ipc://{tmp_path}/frames.sock", metrics=TransportMetrics(metrics))
    try:
        for seq in range(1, 11):
            await pub.send(_frame("a", seq))
        first = await sub.recv(timeout=2)
        await asyncio.sleep(0.05)
        queued = [first, *sub.drain(100)]
        kept, shed = keep_newest_per_camera(queued)
        sub.count_shed(len(shed))
    finally:
        pub.close()
        sub.close()
    assert [f.frame.seq for f in kept] == [10]
    assert len(shed) == 9
    assert _dropped(metrics, "shed", "frames") == 9


async def _connected_pair(
    zctx: zmq.asyncio.Context,
    spec: str,
    *,
    reliable: bool = False,
    hwm: int = 100,
    metrics: TransportMetrics | None = None,
) -> tuple[MessageSocket[FrameReady], MessageSocket[FrameReady]]:
    pub: MessageSocket[FrameReady] = open_socket(
        zctx,
        name="frames",
        pattern="pub",
        spec=spec,
        default_mode="bind",
        message_type=FrameReady,
        hwm=hwm,
        metrics=metrics,
        reliable=reliable,
    )
    sub: MessageSocket[FrameReady] = open_socket(
        zctx,
        name="frames",
        pattern="sub",
        spec=spec,
        default_mode="connect",
        message_type=FrameReady,
        hwm=hwm,
        metrics=metrics,
    )
    for _ in range(100):  # wait until the subscription has reached the publisher
        await pub.send(_frame("warmup", 0))
        try:
            await sub.recv(timeout=0.05)
            break
        except TimeoutError:
            continue
    await asyncio.sleep(0.05)
    sub.drain(1000)
    return pub, sub


async def test_reliable_pub_waits_at_the_hwm_and_loses_nothing(
    zctx: zmq.asyncio.Context, tmp_path: Path
) -> None:
    pub, sub = await _connected_pair(zctx, f"ipc://{tmp_path}/t.sock", reliable=True, hwm=2)
    received: list[int] = []
    try:
        # Far more than both HWMs and the kernel buffers hold: the sender must wait for the reader.
        async def produce() -> None:
            for seq in range(1, 3001):
                await pub.send(_frame("a", seq), timeout=10)

        producer = asyncio.create_task(produce())
        while len(received) < 3000:
            received.append((await sub.recv(timeout=10)).frame.seq)
        await producer
    finally:
        pub.close()
        sub.close()
    assert received == list(range(1, 3001))


async def test_frame_subscription_counts_gaps_and_shed_frames(
    zctx: zmq.asyncio.Context, tmp_path: Path
) -> None:
    metrics = ServiceMetrics("test")
    pub, sub = await _connected_pair(zctx, f"ipc://{tmp_path}/f.sock", metrics=TransportMetrics(metrics))
    subscription = FrameSubscription(sub)
    try:
        for seq in (1, 2, 5, 6, 7):  # 3 and 4 never sent: a gap like a drop at the publisher's HWM
            await pub.send(_frame("a", seq))
        await asyncio.sleep(0.1)
        batch = await subscription.next_batch(timeout=2)
    finally:
        pub.close()
        sub.close()
    assert [f.frame.seq for f in batch] == [7]
    assert (subscription.missing, subscription.shed) == (2, 4)
    assert _dropped(metrics, "gap", "frames") == 2
    assert _dropped(metrics, "shed", "frames") == 4
