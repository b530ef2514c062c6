"""Shared-memory frame store: one ring of frame slots per camera, written once by the decoder.

Ownership: exactly one `FrameWriter` per camera owns its segment (creates it, writes it, unlinks it on
close). Any number of `FrameReader`s in other processes attach to it by name, read the pixels in place and
never write. Messages carry a `schemas.FrameRef` (segment, epoch, slot, seq, shape, dtype); pixels never
travel over a socket.

Slot reuse and torn frames: the writer does not wait for readers (live video must not stall behind a slow
stage). Instead each slot header holds the sequence number of the frame it contains, set to `WRITING`
while the writer fills the slot. A reader checks the sequence before it touches the pixels and again after
it is done with them (`FrameView.still_valid()` / `FrameReader.copy()`); if the slot was reused in between,
the view is stale: the reader counts it and skips the frame. It never processes a torn frame.

Crashes and liveness: a writer holds an exclusive `flock` on its segment for as long as it lives; the
kernel drops the lock when the process dies, however it dies. A ring whose lock can be taken has no
writer: a writer that finds its name held that way reclaims it, one held by a live writer is refused with
a clear error, and `reclaim_stale_segments()` sweeps every such ring of a namespace. The lock lives on the
segment's inode, so the answer is the same from every PID namespace (container) that shares the
`/dev/shm` mount; the writer pid and start time in the header are for people only (`alpr shm list`), as a
pid means nothing in another PID namespace. A restarted writer gets a new `epoch`, so readers holding the
old mapping re-attach.

Memory ordering: the sequence word is an aligned 8-byte store, atomic on x86-64 and ARM64. The writer
and the reader form a seqlock (WRITING → pixels → seq; seq → pixels → seq) and put a full memory fence
(C11 `atomic_thread_fence(memory_order_seq_cst)` from libatomic, called through ctypes) between the
sequence word and the pixels on both sides: after `WRITING` and before the final seq store on the writer,
after the first check and before the second on the reader. ARM64 (Jetson) may reorder stores with stores
and loads with loads, so there the fences are what make the check sound, and a weakly ordered CPU without
libatomic is refused. x86-64 orders them anyway (TSO) except for streaming stores a decoder may use, which
the fence (`mfence`) orders too; without libatomic x86-64 falls back to no fence.

Allocation: a writer allocates its whole ring when it creates it (`posix_fallocate`), so a `/dev/shm`
too small for the ring is a clear `FrameStoreError` at start instead of a SIGBUS at the first frame that
does not fit, and pre-faults its own mapping so the first lap pays no page faults.

This module does no networking and no logging: callers count and log what it reports.
"""

from __future__ import annotations

import contextlib
import ctypes
import errno
import fcntl
import functools
import importlib
import mmap
import os
import platform
import re
import secrets
import struct
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import Any, Final, Self

import numpy as np
import numpy.typing as npt
import psutil

from alpr_shared.schemas import FrameRef

# CPython's shm_open/shm_unlink (no stubs). Not multiprocessing.shared_memory: on 3.11 its resource
# tracker registers every attach and unlinks the segment when any reader process exits.
_posixshmem: Any = importlib.import_module("_posixshmem")

MAGIC: Final = b"ALPRRING"
# 2: liveness is the writer's flock on the segment (1 trusted the pid in the header). A build never
# judges a ring of another layout, so it cannot take a live version-1 ring (which holds no lock) for dead.
LAYOUT_VERSION: Final = 2
WRITING: Final = 2**64 - 1  # sequence word while the writer is filling a slot
EMPTY: Final = 0  # sequence word of a slot never written (frame sequences start at 1)

# Segment header: magic, layout version, slot count, slot capacity (bytes), data offset, epoch,
# writer pid, writer process start time, created at (wall clock), last sequence written.
_HEADER = struct.Struct("<8sIIQQQQddQ")
_HEADER_SIZE: Final = 128
# Slot header: the sequence word (u64) at offset 0, then this metadata at offset 8:
# captured_at_ns (i64), height, width, channels, dtype code (u32). Padded to 64 bytes (one cache line).
_SLOT_META = struct.Struct("<qIIII")
_SLOT_HEADER_SIZE: Final = 64
_ALIGN: Final = 4096  # slot data starts on a page boundary so frames map cleanly into numpy/ORT

# Linux 5.14+: fault a range in as if written (older kernels: EINVAL, and the first lap faults instead).
_MADV_POPULATE_WRITE: Final = getattr(mmap, "MADV_POPULATE_WRITE", 23)
_SEQ_CST: Final = 5  # memory_order_seq_cst in C11's enum (stdatomic.h), the argument of atomic_thread_fence
_LIBATOMIC: Final = "libatomic.so.1"
_LOCK_ATTEMPTS: Final = 200  # × 1 ms: how long a new writer waits for a sweeping checker to drop its lock
_STRONGLY_ORDERED: Final = frozenset({"x86_64", "amd64", "i386", "i686", "x86"})

_DTYPES: Final[dict[str, int]] = {"uint8": 1, "uint16": 2, "float32": 3}
_NAME_RE: Final = re.compile(r"[^A-Za-z0-9_.-]")
SHM_DIR: Final = Path("/dev/shm")  # noqa: S108 - where Linux keeps POSIX shared memory, not a temp file


class FrameStoreError(RuntimeError):
    """A ring could not be created or attached (bad name, held by a live writer, wrong layout)."""


class StaleFrameError(FrameStoreError):
    """The slot a `FrameRef` names was overwritten (or is being overwritten) by a newer frame."""


def segment_name(namespace: str, camera_id: str) -> str:
    """The POSIX shared-memory name of a camera's ring: `alpr.<namespace>.<camera>`.

    Characters outside [A-Za-z0-9_.-] are replaced so any camera id yields a valid, predictable name.
    """
    safe_ns = _NAME_RE.sub("_", namespace)
    safe_cam = _NAME_RE.sub("_", camera_id)
    name = f"alpr.{safe_ns}.{safe_cam}"
    if len(name) > 200:
        raise FrameStoreError(f"segment name too long ({len(name)} chars): {name[:40]}…")
    return name


def _align(n: int, to: int = _ALIGN) -> int:
    return (n + to - 1) // to * to


def _process_start_time(pid: int) -> float | None:
    try:
        return psutil.Process(pid).create_time()
    except (psutil.NoSuchProcess, psutil.AccessDenied, psutil.ZombieProcess):
        return None


Fence = Callable[[], None]


def _no_fence() -> None:
    """x86-64 without libatomic: stores and loads keep program order (TSO); the C calls that separate the
    steps keep the compiler from reordering them."""


def _load_libatomic_fence() -> Fence | None:
    try:
        # PyDLL keeps the GIL: the call is a few nanoseconds, and releasing the GIL around it would let a
        # decoder thread's frame wait behind another thread's time slice.
        lib = ctypes.PyDLL(_LIBATOMIC)
    except OSError:
        return None
    fence = lib.atomic_thread_fence
    fence.argtypes = [ctypes.c_int]
    fence.restype = None
    return functools.partial(fence, _SEQ_CST)


def select_fence(machine: str, load: Callable[[], Fence | None] = _load_libatomic_fence) -> Fence:
    """The full memory fence the seqlock uses on `machine` (`platform.machine()`): libatomic's
    `atomic_thread_fence(seq_cst)`; on x86 without libatomic a no-op (TSO). A weakly ordered CPU
    (ARM64, …) without libatomic raises `FrameStoreError`: its frames could be torn unseen."""
    fence = load()
    if fence is not None:
        return fence
    if machine.lower() in _STRONGLY_ORDERED:
        return _no_fence
    raise FrameStoreError(
        f"the frame store needs {_LIBATOMIC} for memory fences on {machine} (a weakly ordered CPU): "
        "install it (Debian/Ubuntu: apt-get install libatomic1)"
    )


@functools.cache
def memory_fence() -> Fence:
    """This machine's fence (resolved once, on first use: writers and readers ask when they open)."""
    return select_fence(platform.machine())


def _try_lock(fd: int) -> bool:
    """Take the segment's writer lock without waiting; False if a live process holds it."""
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        return False
    return True


def _names_inode(name: str, fd: int) -> bool:
    """True if `name` still names the segment open on `fd` (nobody unlinked or replaced it)."""
    if not SHM_DIR.is_dir():
        return True  # no listable shm here: nothing to compare with
    try:
        st = os.stat(SHM_DIR / name)
    except FileNotFoundError:
        return False
    own = os.fstat(fd)
    return (st.st_dev, st.st_ino) == (own.st_dev, own.st_ino)


def _pread_header(fd: int, name: str) -> RingHeader:
    return _read_header(memoryview(os.pread(fd, _HEADER_SIZE, 0)), name)


def ring_is_live(name: str) -> bool:
    """True while a writer process holds the ring (its lock), seen the same from any PID namespace that
    shares `/dev/shm`. False for a ring whose writer is gone, and for a name that does not exist."""
    try:
        fd = _posixshmem.shm_open("/" + name, os.O_RDONLY, mode=0o600)
    except FileNotFoundError:
        return False
    try:
        return not _try_lock(fd)
    finally:
        os.close(fd)  # drops the lock if we took it


@dataclass(frozen=True, slots=True)
class RingHeader:
    slot_count: int
    slot_capacity: int
    data_offset: int
    epoch: int
    writer_pid: int
    writer_start_time: float
    created_at: float
    last_seq: int

    @property
    def slot_stride(self) -> int:
        return _align(self.slot_capacity)

    def slot_header_offset(self, slot: int) -> int:
        return _HEADER_SIZE + slot * _SLOT_HEADER_SIZE

    def slot_data_offset(self, slot: int) -> int:
        return self.data_offset + slot * self.slot_stride


def _read_header(buf: mmap.mmap | memoryview, name: str) -> RingHeader:
    if len(buf) < _HEADER_SIZE:
        raise FrameStoreError(f"segment {name} is too small to be a frame ring ({len(buf)} bytes)")
    magic, version, slots, capacity, data_offset, epoch, pid, start, created, last_seq = _HEADER.unpack_from(
        buf, 0
    )
    if magic != MAGIC:
        raise FrameStoreError(f"segment {name} is not an alpr frame ring (magic {magic!r})")
    if version != LAYOUT_VERSION:
        raise FrameStoreError(
            f"segment {name} has ring layout {version}, this build uses {LAYOUT_VERSION}; "
            "restart the writer with the same alpr version"
        )
    return RingHeader(slots, capacity, data_offset, epoch, pid, start, created, last_seq)


def ring_size(slot_count: int, slot_capacity: int) -> int:
    """Bytes of shared memory a ring of `slot_count` slots of `slot_capacity` bytes takes."""
    data_offset = _align(_HEADER_SIZE + slot_count * _SLOT_HEADER_SIZE)
    return data_offset + slot_count * _align(slot_capacity)


def _open_segment(name: str) -> mmap.mmap:
    """Map an existing segment read-only (readers, status tools)."""
    fd = _posixshmem.shm_open("/" + name, os.O_RDONLY, mode=0o600)
    try:
        size = os.fstat(fd).st_size
        if size == 0:
            raise FrameStoreError(f"segment {name} is empty (its writer has not initialised it yet)")
        return mmap.mmap(fd, size, mmap.MAP_SHARED, mmap.PROT_READ)
    finally:
        os.close(fd)


def _create_segment(name: str, size: int) -> tuple[int, mmap.mmap]:
    """Create, lock, allocate and map a new segment; returns its fd (which holds the writer lock for as
    long as it is open) and a writable mapping of it."""
    for _ in range(3):
        try:
            fd = _posixshmem.shm_open("/" + name, os.O_RDWR | os.O_CREAT | os.O_EXCL, mode=0o600)
        except FileExistsError as exc:
            raise FrameStoreError(
                f"segment {name} appeared while this writer was starting; is another ingest for this "
                "camera running?"
            ) from exc
        try:
            _lock_new(fd, name)
            if not _names_inode(name, fd):
                os.close(fd)
                continue  # a checker unlinked it before we locked it: create it again
            os.ftruncate(fd, size)
            _allocate(fd, size, name)
            mm = mmap.mmap(fd, size, mmap.MAP_SHARED, mmap.PROT_READ | mmap.PROT_WRITE)
        except BaseException:
            with contextlib.suppress(OSError):
                if _names_inode(name, fd):
                    _unlink(name)
            os.close(fd)
            raise
        if sys.platform == "linux":
            with contextlib.suppress(OSError):  # best effort: pre-fault the writer's page tables
                mm.madvise(_MADV_POPULATE_WRITE)
        return fd, mm
    raise FrameStoreError(f"segment {name} was unlinked three times while being created")


def _lock_new(fd: int, name: str) -> None:
    """Take the writer lock of a segment just created. A sweeping checker may hold it for a moment (it
    found an empty segment with no lock and took it for a dead writer's): wait for it; the caller then
    makes sure the checker did not unlink the segment."""
    for _ in range(_LOCK_ATTEMPTS):
        if _try_lock(fd):
            return
        time.sleep(0.001)
    raise FrameStoreError(f"segment {name}: could not take the writer lock of a new segment")


def _allocate(fd: int, size: int, name: str) -> None:
    """Give the segment all its pages now: a full `/dev/shm` fails here, not with SIGBUS mid-stream."""
    if not hasattr(os, "posix_fallocate"):
        return
    try:
        os.posix_fallocate(fd, 0, size)
    except OSError as exc:
        if exc.errno in (errno.ENOSPC, errno.ENOMEM):
            raise FrameStoreError(
                f"segment {name}: /dev/shm has no room for a {size / 1e6:.1f} MB ring ({exc.strerror}); "
                "give the container more shared memory (shm_size, ALPR_SHM_SIZE) or lower "
                "frame_store.slots_per_camera / max_width / max_height"
            ) from exc
        if exc.errno not in (errno.EOPNOTSUPP, errno.EINVAL):
            raise


def _unlink(name: str) -> bool:
    try:
        _posixshmem.shm_unlink("/" + name)
    except FileNotFoundError:
        return False
    return True


def reclaim_stale_segments(namespace: str | None = None) -> list[str]:
    """Unlink every alpr ring (of `namespace`, or of any) that no writer holds (its lock is free).

    Returns the names reclaimed. Segments that are not frame rings of this layout are left alone. Only
    possible where POSIX shared memory is listable (`/dev/shm`, Linux); elsewhere writers still reclaim
    their own segment by name when they start.
    """
    if not SHM_DIR.is_dir():
        return []
    prefix = "alpr." if namespace is None else f"alpr.{_NAME_RE.sub('_', namespace)}."
    reclaimed: list[str] = []
    for entry in SHM_DIR.iterdir():
        if not entry.name.startswith(prefix):
            continue
        try:
            fd = os.open(entry, os.O_RDONLY | os.O_CLOEXEC)
        except OSError:
            continue
        try:
            if not _try_lock(fd):
                continue  # a live writer holds it
            _pread_header(fd, entry.name)  # not ours to judge unless it is a ring of this layout
            # Unlink while holding the lock, and only the segment we judged.
            if _names_inode(entry.name, fd) and _unlink(entry.name):
                reclaimed.append(entry.name)
        except (OSError, FrameStoreError):
            continue
        finally:
            os.close(fd)
    return reclaimed


class FrameWriter:
    """Owns one camera's ring: creates the segment, writes frames into successive slots, unlinks on close.

    Not thread-safe: one writer per ring, used from one thread.
    """

    def __init__(
        self,
        name: str,
        *,
        slot_count: int,
        max_height: int,
        max_width: int,
        channels: int = 3,
        dtype: str = "uint8",
    ) -> None:
        if slot_count < 2:
            raise FrameStoreError(f"slot_count must be at least 2 (got {slot_count})")
        if dtype not in _DTYPES:
            raise FrameStoreError(f"unsupported dtype {dtype!r}; one of {sorted(_DTYPES)}")
        self.name = name
        self.slot_count = slot_count
        self.slot_capacity = max_height * max_width * channels * np.dtype(dtype).itemsize
        self.size = ring_size(slot_count, self.slot_capacity)
        self.epoch = secrets.randbits(63) | 1  # never 0, so a zeroed header cannot match a handle
        self._fence = memory_fence()
        self.reclaimed_stale = self._reclaim_if_stale()
        # The fd stays open: it holds the writer lock that tells everyone this ring is live.
        self._fd, mm = _create_segment(name, self.size)
        self._mm: mmap.mmap | None = mm
        self._seq = 0
        self._reserved: tuple[int, int, int, int, int, str] | None = None
        pid = os.getpid()
        start = _process_start_time(pid) or time.time()
        self._header = RingHeader(
            slot_count=slot_count,
            slot_capacity=self.slot_capacity,
            data_offset=_align(_HEADER_SIZE + slot_count * _SLOT_HEADER_SIZE),
            epoch=self.epoch,
            writer_pid=pid,
            writer_start_time=start,
            created_at=time.time(),
            last_seq=0,
        )
        self._seq_words = np.ndarray(
            (slot_count,), dtype="<u8", buffer=self._mm, offset=_HEADER_SIZE, strides=(_SLOT_HEADER_SIZE,)
        )
        self._write_header()

    def _reclaim_if_stale(self) -> bool:
        try:
            fd = _posixshmem.shm_open("/" + self.name, os.O_RDWR, mode=0o600)
        except FileNotFoundError:
            return False
        try:
            if not _try_lock(fd):
                try:
                    holder = f"pid {_pread_header(fd, self.name).writer_pid} in its PID namespace"
                except FrameStoreError:
                    holder = "a process still starting it"
                raise FrameStoreError(
                    f"segment {self.name} is held by a running writer ({holder}); "
                    "is another ingest for this camera running?"
                )
            if os.fstat(fd).st_size > 0:
                _pread_header(fd, self.name)  # a foreign segment or another layout: refuse, leave it
            # else: the empty leftover of a writer that died while creating it
            if _names_inode(self.name, fd):
                _unlink(self.name)
            return True
        finally:
            os.close(fd)

    def _write_header(self) -> None:
        if self._mm is None:
            raise FrameStoreError(f"ring {self.name} is closed")
        h = self._header
        _HEADER.pack_into(
            self._mm,
            0,
            MAGIC,
            LAYOUT_VERSION,
            h.slot_count,
            h.slot_capacity,
            h.data_offset,
            h.epoch,
            h.writer_pid,
            h.writer_start_time,
            h.created_at,
            self._seq,
        )

    @property
    def last_seq(self) -> int:
        return self._seq

    def write(self, frame: npt.NDArray[np.generic], captured_at_ns: int | None = None) -> FrameRef:
        """Copy one frame into the next slot (the only copy of its pixels) and return its handle."""
        if frame.ndim == 2:
            frame = frame[:, :, None]
        dest = self.reserve(frame.shape, frame.dtype.name)
        try:
            np.copyto(dest, frame, casting="no")
        except BaseException:
            self.abort()
            raise
        return self.commit(captured_at_ns)

    def reserve(self, shape: tuple[int, ...], dtype: str = "uint8") -> npt.NDArray[np.generic]:
        """Claim the next slot and return a writable view of it, for a decoder to write into directly
        (no intermediate buffer). The slot reads as `WRITING` until `commit()` publishes it, or
        `abort()` gives it up; readers holding a handle to the frame it held before see it as stale."""
        mm = self._mm
        if mm is None:
            raise FrameStoreError(f"ring {self.name} is closed")
        if self._reserved is not None:
            raise FrameStoreError(f"ring {self.name}: commit() or abort() the reserved slot first")
        if len(shape) == 2:
            shape = (*shape, 1)
        if len(shape) != 3:
            raise FrameStoreError(f"frame must be HxW or HxWxC, got shape {shape}")
        if dtype not in _DTYPES:
            raise FrameStoreError(f"unsupported dtype {dtype!r}")
        height, width, channels = (int(n) for n in shape)
        nbytes = height * width * channels * np.dtype(dtype).itemsize
        if nbytes > self.slot_capacity:
            raise FrameStoreError(
                f"frame {shape} {dtype} ({nbytes} bytes) exceeds the ring's slot capacity "
                f"({self.slot_capacity} bytes); raise frame_store.max_width/max_height"
            )
        seq = self._seq + 1
        slot = seq % self.slot_count
        self._seq_words[slot] = WRITING
        self._fence()  # WRITING is visible before any pixel of the new frame
        view: npt.NDArray[np.generic] = np.ndarray(
            (height, width, channels), dtype=dtype, buffer=mm, offset=self._header.slot_data_offset(slot)
        )
        self._reserved = (seq, slot, height, width, channels, dtype)
        return view

    def commit(self, captured_at_ns: int | None = None) -> FrameRef:
        """Publish the reserved slot and return the frame's handle."""
        mm = self._mm
        if mm is None or self._reserved is None:
            raise FrameStoreError(f"ring {self.name}: nothing reserved to commit")
        seq, slot, height, width, channels, dtype = self._reserved
        ts = time.time_ns() if captured_at_ns is None else captured_at_ns
        _SLOT_META.pack_into(
            mm, self._header.slot_header_offset(slot) + 8, ts, height, width, channels, _DTYPES[dtype]
        )
        self._fence()  # every pixel and the metadata are visible before the seq that publishes them
        self._seq_words[slot] = seq  # publish: from here on readers may use the slot
        self._seq = seq
        self._reserved = None
        struct.pack_into("<Q", mm, _HEADER.size - 8, seq)
        return FrameRef(
            segment=self.name,
            epoch=self.epoch,
            slot=slot,
            seq=seq,
            height=height,
            width=width,
            channels=channels,
            dtype=dtype,
        )

    def abort(self) -> None:
        """Give up a reserved slot (e.g. the decoder failed half-way): it holds no frame any more."""
        if self._reserved is None:
            return
        _, slot, *_ = self._reserved
        self._seq_words[slot] = EMPTY
        self._reserved = None

    def close(self) -> None:
        """Unmap and unlink the segment. Readers that still map it keep their mapping until they close."""
        if self._mm is None:
            return
        # Views into the mapping must be dropped before it can be closed.
        del self._seq_words
        self._mm.close()
        self._mm = None
        if _names_inode(self.name, self._fd):
            _unlink(self.name)
        os.close(self._fd)  # releases the writer lock

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()


class FrameView:
    """Zero-copy view of a slot. Valid only while `still_valid()`; check it after using the pixels."""

    __slots__ = ("_attached", "array", "ref")

    def __init__(self, ref: FrameRef, array: npt.NDArray[np.generic], attached: _AttachedRing) -> None:
        self.ref = ref
        self.array = array
        self._attached = attached

    def still_valid(self) -> bool:
        """True if the slot still holds this frame, i.e. every pixel read so far was the frame's."""
        self._attached.fence()  # every pixel load is done before the seq word is read again
        return self._attached.current_seq(self.ref.slot) == self.ref.seq


class _AttachedRing:
    def __init__(self, name: str, fence: Fence) -> None:
        self.name = name
        self.fence = fence
        # Readers map the ring read-only: a bug in a consumer cannot corrupt another stage's frames.
        self.mm = _open_segment(name)
        self.header = _read_header(self.mm, name)
        self.seq_words = np.ndarray(
            (self.header.slot_count,),
            dtype="<u8",
            buffer=self.mm,
            offset=_HEADER_SIZE,
            strides=(_SLOT_HEADER_SIZE,),
        )

    def current_seq(self, slot: int) -> int:
        return int(self.seq_words[slot])

    def close(self) -> None:
        del self.seq_words
        with contextlib.suppress(BufferError):
            # A caller still holding a FrameView keeps the mapping alive; it is freed with the view.
            self.mm.close()


@dataclass
class ReaderStats:
    frames_read: int = 0
    stale_before: int = 0  # the slot already held another frame when we arrived
    stale_after: int = 0  # the slot was overwritten while we were reading it
    reattached: int = 0  # the writer restarted (new epoch) and we mapped its new segment

    @property
    def stale(self) -> int:
        return self.stale_before + self.stale_after


class FrameReader:
    """Attaches to rings by name (lazily, on first handle) and hands out views or copies of frames.

    A reader never writes to a ring and never unlinks one. Stale handles raise `StaleFrameError` and are
    counted in `stats`; callers skip the frame.
    """

    def __init__(self) -> None:
        self._rings: dict[str, _AttachedRing] = {}
        self._fence = memory_fence()
        self.stats = ReaderStats()

    def _ring(self, ref: FrameRef) -> _AttachedRing:
        current = self._rings.get(ref.segment)
        if current is not None and current.header.epoch == ref.epoch:
            return current
        # Either our first handle for this ring, or the epochs differ: map what is there now and see
        # whether the handle belongs to it (the writer restarted) or is a late one from a dead writer.
        try:
            fresh = _AttachedRing(ref.segment, self._fence)
        except FileNotFoundError as exc:
            raise StaleFrameError(f"ring {ref.segment} no longer exists (its writer stopped)") from exc
        if current is not None and fresh.header.epoch == current.header.epoch:
            fresh.close()  # our mapping is current; the handle is the stale one
        elif fresh.header.epoch == ref.epoch:
            if current is not None:
                current.close()
                self.stats.reattached += 1
            self._rings[ref.segment] = fresh
            return fresh
        else:
            fresh.close()
        raise StaleFrameError(
            f"ring {ref.segment} belongs to another writer instance than the handle's (epoch {ref.epoch})"
        )

    def view(self, ref: FrameRef) -> FrameView:
        """A zero-copy view of the frame. Raises `StaleFrameError` if the slot no longer holds it.

        The caller must call `still_valid()` after it has finished reading the pixels (or use
        `copy()`); a view used after the writer lapped the ring holds another frame's pixels.
        """
        ring = self._ring(ref)
        header = ring.header
        if not 0 <= ref.slot < header.slot_count:
            raise FrameStoreError(f"handle names slot {ref.slot} of a {header.slot_count}-slot ring")
        if ring.current_seq(ref.slot) != ref.seq:
            self.stats.stale_before += 1
            raise StaleFrameError(f"slot {ref.slot} of {ref.segment} no longer holds frame {ref.seq}")
        ring.fence()  # no pixel load is done before the seq word that vouches for it
        dtype = np.dtype(ref.dtype)
        if ref.height * ref.width * ref.channels * dtype.itemsize > header.slot_capacity:
            raise FrameStoreError(f"handle shape {ref.shape} does not fit ring {ref.segment}")
        array: npt.NDArray[np.generic] = np.ndarray(
            ref.shape, dtype=dtype, buffer=ring.mm, offset=header.slot_data_offset(ref.slot)
        )
        return FrameView(ref, array, ring)

    def release(self, view: FrameView) -> None:
        """Finish with a view: verify it was not overwritten while used; count a read or a stale one."""
        if view.still_valid():
            self.stats.frames_read += 1
            return
        self.stats.stale_after += 1
        raise StaleFrameError(
            f"slot {view.ref.slot} of {view.ref.segment} was overwritten while frame {view.ref.seq} was read"
        )

    @contextlib.contextmanager
    def frame(self, ref: FrameRef) -> Iterator[npt.NDArray[np.generic]]:
        """`with reader.frame(ref) as pixels:` — raises `StaleFrameError` at exit if the frame was torn.

        Work done inside the block must be discarded when this raises.
        """
        view = self.view(ref)
        yield view.array
        self.release(view)

    def copy(self, ref: FrameRef) -> npt.NDArray[np.generic]:
        """A private copy of the frame, guaranteed untorn (or `StaleFrameError`)."""
        with self.frame(ref) as pixels:
            out = pixels.copy()
        return out

    def close(self) -> None:
        for ring in self._rings.values():
            ring.close()
        self._rings.clear()

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()


def read_ring_header(name: str) -> RingHeader:
    """The header of a ring (for status tools and tests)."""
    mm = _open_segment(name)
    try:
        return _read_header(mm, name)
    finally:
        mm.close()
