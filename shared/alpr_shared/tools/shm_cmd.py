"""`alpr shm list|reclaim`: show the frame rings in shared memory, or unlink those whose writer is gone."""

from __future__ import annotations

import argparse
from collections.abc import Sequence

from alpr_shared.framestore import (
    SHM_DIR,
    FrameStoreError,
    read_ring_header,
    reclaim_stale_segments,
    ring_is_live,
)


def main(argv: Sequence[str]) -> int:
    parser = argparse.ArgumentParser(prog="alpr shm", description=__doc__)
    parser.add_argument("action", choices=["list", "reclaim"])
    parser.add_argument("--namespace", help="only rings of this namespace (default: all alpr rings)")
    args = parser.parse_args(argv)
    if args.action == "reclaim":
        reclaimed = reclaim_stale_segments(args.namespace)
        print(f"reclaimed {len(reclaimed)} stale ring(s)" + "".join(f"\n  {n}" for n in reclaimed))
        return 0
    if not SHM_DIR.is_dir():
        print(f"{SHM_DIR} does not exist on this system; rings cannot be listed")
        return 1
    prefix = "alpr." if args.namespace is None else f"alpr.{args.namespace}."
    names = sorted(p.name for p in SHM_DIR.iterdir() if p.name.startswith(prefix))
    if not names:
        print("no alpr frame rings in shared memory")
    for name in names:
        try:
            h = read_ring_header(name)
        except (OSError, FrameStoreError) as exc:
            print(f"{name}: unreadable ({exc})")
            continue
        state = "live" if ring_is_live(name) else "STALE (writer gone)"
        size_mb = (h.data_offset + h.slot_count * h.slot_stride) / 1e6
        print(
            f"{name}: {state}, writer pid {h.writer_pid} (in its PID namespace), {h.slot_count} slots × {h.slot_capacity / 1e6:.1f} MB "
            f"= {size_mb:.1f} MB, last frame {h.last_seq}"
        )
    return 0
