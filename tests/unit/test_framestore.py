"""The shared-memory frame ring: frames written once, read in place, and a reused slot never passed off
as the frame a handle names."""

from __future__ import annotations

import os
import threading
import uuid
import zlib
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

from alpr_shared import framestore as fs
from alpr_shared.schemas import FrameRef


@pytest.fixture
def ring_name() -> Iterator[str]:
    name = fs.segment_name(f"test{uuid.uuid4().hex[:8]}", "cam-1")
    yield name
    # The tests close their writers; this only cleans up after a failing one.
    fs._unlink(name)


def _frame(value: int, shape: tuple[int, int, int] = (48, 64, 3)) -> np.ndarray:
    return np.full(shape, value % 256, dtype=np.uint8)


def test_segment_name_is_sanitised() -> None:
    assert fs.segment_name("site 1", "gate/entry:2") == "alpr.site_1.gate_entry_2"


def test_written_frame_reads_back_identical(ring_name: str) -> None:
    rng = np.random.default_rng(1)
    frame = rng.integers(0, 255, (120, 160, 3), dtype=np.uint8)
    with (
        fs.FrameWriter(ring_name, slot_count=4, max_height=120, max_width=160) as writer,
        fs.FrameReader() as reader,
    ):
        ref = writer.write(frame)
        assert (ref.segment, ref.seq, ref.shape, ref.dtype) == (ring_name, 1, (120, 160, 3), "uint8")
        np.testing.assert_array_equal(reader.copy(ref), frame)
        with reader.frame(ref) as pixels:
            assert not pixels.flags.writeable
            np.testing.assert_array_equal(pixels, frame)
        assert reader.stats.frames_read == 2


def test_grayscale_and_smaller_frames_fit(ring_name: str) -> None:
    with (
        fs.FrameWriter(ring_name, slot_count=2, max_height=100, max_width=100) as writer,
        fs.FrameReader() as reader,
    ):
        gray = np.arange(50 * 40, dtype=np.uint8).reshape(50, 40)
        ref = writer.write(gray)
        assert ref.shape == (50, 40, 1)
        np.testing.assert_array_equal(reader.copy(ref)[:, :, 0], gray)


def test_oversized_frame_is_refused_with_the_setting_to_change(ring_name: str) -> None:
    with (
        fs.FrameWriter(ring_name, slot_count=2, max_height=10, max_width=10) as writer,
        pytest.raises(fs.FrameStoreError, match="max_width/max_height"),
    ):
        writer.write(_frame(1, (20, 20, 3)))


def test_ring_reuse_under_a_slow_reader_is_detected_counted_and_skipped(ring_name: str) -> None:
    with (
        fs.FrameWriter(ring_name, slot_count=3, max_height=48, max_width=64) as writer,
        fs.FrameReader() as reader,
    ):
        first = writer.write(_frame(1))
        # The reader is slow: the writer laps the ring before it gets to `first`.
        for i in range(2, 5):
            writer.write(_frame(i))
        with pytest.raises(fs.StaleFrameError, match="no longer holds frame 1"):
            reader.view(first)
        assert reader.stats.stale_before == 1
        assert reader.stats.frames_read == 0


def test_slot_overwritten_while_reading_is_detected_at_release(ring_name: str) -> None:
    with (
        fs.FrameWriter(ring_name, slot_count=2, max_height=48, max_width=64) as writer,
        fs.FrameReader() as reader,
    ):
        ref = writer.write(_frame(10))
        view = reader.view(ref)
        assert view.array[0, 0, 0] == 10
        writer.write(_frame(11))
        writer.write(_frame(12))  # reuses ref's slot while the view is held
        assert not view.still_valid()
        assert view.array[0, 0, 0] == 12  # the pixels really did change under the view …
        with pytest.raises(fs.StaleFrameError, match="overwritten while frame 1 was read"):
            reader.release(view)  # … and release says so
        assert reader.stats.stale_after == 1
        del view


def test_frame_context_raises_after_a_torn_read(ring_name: str) -> None:
    with (
        fs.FrameWriter(ring_name, slot_count=2, max_height=48, max_width=64) as writer,
        fs.FrameReader() as reader,
    ):
        ref = writer.write(_frame(1))
        with pytest.raises(fs.StaleFrameError), reader.frame(ref):
            writer.write(_frame(2))
            writer.write(_frame(3))


def test_concurrent_writer_never_yields_a_torn_copy(ring_name: str) -> None:
    """A writer thread laps a tiny ring as fast as it can while the reader copies: every copy that is
    returned must be one whole frame (uniform value matching its sequence), stale ones must raise."""
    shape = (270, 480, 3)
    stop = threading.Event()
    refs: list[FrameRef] = []
    with (
        fs.FrameWriter(ring_name, slot_count=2, max_height=270, max_width=480) as writer,
        fs.FrameReader() as reader,
    ):

        def write_forever() -> None:
            i = 0
            while not stop.is_set():
                i += 1
                refs.append(writer.write(_frame(i, shape)))

        thread = threading.Thread(target=write_forever)
        thread.start()
        good = stale = 0
        try:
            while good + stale < 400:
                if not refs:
                    continue
                ref = refs[-1]
                try:
                    pixels = reader.copy(ref)
                except fs.StaleFrameError:
                    stale += 1
                    continue
                expected = ref.seq % 256
                assert pixels.min() == expected and pixels.max() == expected, f"torn frame {ref.seq}"
                good += 1
        finally:
            stop.set()
            thread.join()
    assert good > 0
    assert reader.stats.stale == stale


def test_handle_from_another_writer_instance_is_stale(ring_name: str) -> None:
    with fs.FrameWriter(ring_name, slot_count=2, max_height=8, max_width=8) as writer:
        ref = writer.write(_frame(1, (8, 8, 3)))
    with fs.FrameReader() as reader:
        with pytest.raises(fs.StaleFrameError, match="no longer exists"):
            reader.view(ref)
        with fs.FrameWriter(ring_name, slot_count=2, max_height=8, max_width=8) as restarted:
            new_ref = restarted.write(_frame(5, (8, 8, 3)))
            assert new_ref.epoch != ref.epoch
            with pytest.raises(fs.StaleFrameError, match="another writer instance"):
                reader.view(ref)
            assert reader.copy(new_ref)[0, 0, 0] == 5


def test_reader_reattaches_when_the_writer_restarts(ring_name: str) -> None:
    with fs.FrameReader() as reader:
        with fs.FrameWriter(ring_name, slot_count=2, max_height=8, max_width=8) as first:
            assert reader.copy(first.write(_frame(1, (8, 8, 3))))[0, 0, 0] == 1
        with fs.FrameWriter(ring_name, slot_count=2, max_height=8, max_width=8) as second:
            assert reader.copy(second.write(_frame(2, (8, 8, 3))))[0, 0, 0] == 2
        assert reader.stats.reattached == 1


def test_second_live_writer_is_refused(ring_name: str) -> None:
    with (
        fs.FrameWriter(ring_name, slot_count=2, max_height=8, max_width=8),
        pytest.raises(fs.FrameStoreError, match="held by a running writer"),
    ):
        fs.FrameWriter(ring_name, slot_count=2, max_height=8, max_width=8)


def test_close_unlinks_the_segment(ring_name: str) -> None:
    writer = fs.FrameWriter(ring_name, slot_count=2, max_height=8, max_width=8)
    assert (fs.SHM_DIR / ring_name).exists()
    writer.close()
    writer.close()  # idempotent
    assert not (fs.SHM_DIR / ring_name).exists()
    with pytest.raises(fs.FrameStoreError, match="closed"):
        writer.write(_frame(1, (8, 8, 3)))


def test_ring_header_describes_the_writer(ring_name: str) -> None:
    with fs.FrameWriter(ring_name, slot_count=5, max_height=10, max_width=10) as writer:
        writer.write(_frame(1, (10, 10, 3)))
        writer.write(_frame(2, (10, 10, 3)))
        header = fs.read_ring_header(ring_name)
        assert (header.slot_count, header.slot_capacity, header.writer_pid, header.last_seq) == (
            5,
            300,
            os.getpid(),
            2,
        )
        assert header.epoch == writer.epoch
        assert fs.ring_size(5, 300) == writer.size


def test_foreign_segment_is_not_taken_for_a_ring(ring_name: str) -> None:
    path = fs.SHM_DIR / ring_name
    path.write_bytes(b"x" * 4096)
    with pytest.raises(fs.FrameStoreError, match="not an alpr frame ring"):
        fs.FrameWriter(ring_name, slot_count=2, max_height=8, max_width=8)
    assert path.exists(), "a segment we do not recognise is left alone"
    assert ring_name not in fs.reclaim_stale_segments()


def test_checksum_of_view_matches_copy(ring_name: str) -> None:
    rng = np.random.default_rng(3)
    frame = rng.integers(0, 255, (64, 64, 3), dtype=np.uint8)
    with (
        fs.FrameWriter(ring_name, slot_count=2, max_height=64, max_width=64) as writer,
        fs.FrameReader() as reader,
    ):
        ref = writer.write(frame)
        with reader.frame(ref) as pixels:
            crc = zlib.crc32(pixels.data)
        assert crc == zlib.crc32(frame.tobytes())


def test_late_handle_from_a_dead_writer_does_not_unmap_the_current_ring(ring_name: str) -> None:
    with fs.FrameReader() as reader:
        with fs.FrameWriter(ring_name, slot_count=2, max_height=8, max_width=8) as old:
            old_ref = old.write(_frame(1, (8, 8, 3)))
        with fs.FrameWriter(ring_name, slot_count=2, max_height=8, max_width=8) as new:
            new_ref = new.write(_frame(2, (8, 8, 3)))
            assert reader.copy(new_ref)[0, 0, 0] == 2
            with pytest.raises(fs.StaleFrameError, match="another writer instance"):
                reader.view(old_ref)  # arrives late, after the restarted writer's first frame
            assert reader.copy(new.write(_frame(3, (8, 8, 3))))[0, 0, 0] == 3
        assert reader.stats.reattached == 0


def test_decoder_writes_straight_into_a_reserved_slot(ring_name: str) -> None:
    with (
        fs.FrameWriter(ring_name, slot_count=2, max_height=8, max_width=8) as writer,
        fs.FrameReader() as reader,
    ):
        old = writer.write(_frame(1, (8, 8, 3)))
        old_again = writer.write(_frame(2, (8, 8, 3)))
        slot = writer.reserve((8, 8, 3))
        with pytest.raises(fs.StaleFrameError):
            reader.view(old)  # the reserved slot already reads as being written
        with pytest.raises(fs.FrameStoreError, match="reserved slot first"):
            writer.reserve((8, 8, 3))
        slot[:] = 7  # the "decoder" fills it in place
        ref = writer.commit(captured_at_ns=123)
        assert ref.seq == 3
        assert reader.copy(ref)[0, 0, 0] == 7
        assert reader.copy(old_again)[0, 0, 0] == 2


def test_aborted_reservation_publishes_nothing(ring_name: str) -> None:
    with (
        fs.FrameWriter(ring_name, slot_count=2, max_height=8, max_width=8) as writer,
        fs.FrameReader() as reader,
    ):
        first = writer.write(_frame(1, (8, 8, 3)))
        writer.write(_frame(2, (8, 8, 3)))
        writer.reserve((8, 8, 3))
        writer.abort()
        with pytest.raises(fs.StaleFrameError):
            reader.view(first)  # its slot was given up, not restored
        with pytest.raises(fs.FrameStoreError, match="nothing reserved"):
            writer.commit()
        assert reader.copy(writer.write(_frame(4, (8, 8, 3))))[0, 0, 0] == 4


def _rewrite_recorded_writer(name: str, pid: int, start_time: float) -> None:
    """Overwrite the writer pid and start time in a ring's header, as a writer in another PID namespace
    would have recorded them (its own pid, meaningless here)."""
    with (fs.SHM_DIR / name).open("r+b") as fh:
        fields = list(fs._HEADER.unpack(fh.read(fs._HEADER.size)))
        fields[6], fields[7] = pid, start_time
        fh.seek(0)
        fh.write(fs._HEADER.pack(*fields))


def test_a_live_writer_is_live_whatever_pid_its_header_records(ring_name: str) -> None:
    """The pid a writer recorded means nothing in another PID namespace: liveness is its lock."""
    no_such_pid = int(Path("/proc/sys/kernel/pid_max").read_text()) + 1  # cannot exist in this namespace
    with fs.FrameWriter(ring_name, slot_count=2, max_height=8, max_width=8) as writer:
        _rewrite_recorded_writer(ring_name, no_such_pid, 0.0)
        assert fs.ring_is_live(ring_name)
        assert ring_name not in fs.reclaim_stale_segments()
        with pytest.raises(fs.FrameStoreError, match=f"held by a running writer \\(pid {no_such_pid}"):
            fs.FrameWriter(ring_name, slot_count=2, max_height=8, max_width=8)
        with fs.FrameReader() as reader:
            assert reader.copy(writer.write(_frame(9, (8, 8, 3))))[0, 0, 0] == 9
    assert not fs.ring_is_live(ring_name)


def test_new_ring_is_allocated_up_front(ring_name: str) -> None:
    with fs.FrameWriter(ring_name, slot_count=3, max_height=64, max_width=64) as writer:
        allocated = os.stat(fs.SHM_DIR / ring_name).st_blocks * 512
        assert allocated >= writer.size, "every page of the ring exists before the first frame"


def test_ring_larger_than_shared_memory_fails_at_creation_not_with_sigbus(ring_name: str) -> None:
    vfs = os.statvfs(fs.SHM_DIR)
    too_big = 2 * vfs.f_blocks * vfs.f_frsize  # twice the whole /dev/shm: refused before allocating
    side = int((too_big / 2 / 3) ** 0.5) + 1
    with pytest.raises(fs.FrameStoreError, match=r"no room for a .* ring.*shm_size"):
        fs.FrameWriter(ring_name, slot_count=2, max_height=side, max_width=side)
    assert not (fs.SHM_DIR / ring_name).exists(), "the failed ring is not left behind"


def test_writer_recreates_a_segment_a_sweeping_checker_unlinked_before_it_was_locked(
    ring_name: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    real_try_lock = fs._try_lock
    calls = 0

    def checker_wins_once(fd: int) -> bool:
        # The first new segment is seen by a checker before its writer locks it: the checker finds
        # it empty and unlocked, takes it for a dead writer's leftover and unlinks it.
        nonlocal calls
        calls += 1
        if calls == 1:
            fs._unlink(ring_name)
        return real_try_lock(fd)

    monkeypatch.setattr(fs, "_try_lock", checker_wins_once)
    with fs.FrameWriter(ring_name, slot_count=2, max_height=8, max_width=8) as writer:
        assert calls == 2
        monkeypatch.setattr(fs, "_try_lock", real_try_lock)
        assert fs.ring_is_live(ring_name)
        with fs.FrameReader() as reader:
            assert reader.copy(writer.write(_frame(4, (8, 8, 3))))[0, 0, 0] == 4


def test_weakly_ordered_cpu_gets_a_real_fence_or_is_refused() -> None:
    fence = fs.select_fence("aarch64")  # libatomic's atomic_thread_fence(seq_cst), loaded here
    assert fence is not fs._no_fence
    fence()
    with pytest.raises(fs.FrameStoreError, match="libatomic1"):
        fs.select_fence("aarch64", lambda: None)
    assert fs.select_fence("x86_64", lambda: None) is fs._no_fence  # TSO: no fence needed


def test_seqlock_fences_sit_between_the_sequence_word_and_the_pixels(
    ring_name: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    with fs.FrameWriter(ring_name, slot_count=2, max_height=8, max_width=8) as writer:
        slot = 1  # frame 1 goes to slot 1 % 2
        # The first pixel of the slot, seen through the writer's mapping (dropped before it closes).
        probe = [np.ndarray((1,), np.uint8, buffer=writer._mm, offset=writer._header.slot_data_offset(slot))]
        seen: list[tuple[int, int]] = []
        monkeypatch.setattr(
            writer, "_fence", lambda: seen.append((int(writer._seq_words[slot]), int(probe[0][0])))
        )
        ref = writer.write(_frame(7, (8, 8, 3)))
        probe.clear()
        # reserve: WRITING is stored before the fence, no pixel yet; commit: every pixel before the
        # fence, the frame's seq only after it.
        assert seen == [(fs.WRITING, 0), (fs.WRITING, 7)]
        assert int(writer._seq_words[slot]) == ref.seq == 1

        steps: list[str] = []
        real_current_seq = fs._AttachedRing.current_seq

        def current_seq(ring: fs._AttachedRing, slot: int) -> int:
            steps.append("seq")
            return real_current_seq(ring, slot)

        monkeypatch.setattr(fs._AttachedRing, "current_seq", current_seq)
        with fs.FrameReader() as reader:
            monkeypatch.setattr(reader, "_fence", lambda: steps.append("fence"))
            with reader.frame(ref) as pixels:
                steps.append("pixels")
                assert pixels[0, 0, 0] == 7
        assert steps == ["seq", "fence", "pixels", "fence", "seq"]
