"""`--save-video`: annotated frames stamped with their capture times play at the camera's pace."""

from __future__ import annotations

from pathlib import Path

import av
import numpy as np
import pytest

from alpr_shared.view.recorder import VideoRecorder


def test_frames_keep_their_capture_times_and_size(tmp_path: Path) -> None:
    out = tmp_path / "sub" / "view.mp4"
    recorder = VideoRecorder(out, nominal_fps=10)
    t0 = 1_700_000_000_000_000_000
    for i in range(10):
        frame = np.full((120, 161, 3), i * 20, dtype=np.uint8)  # odd width: yuv420p needs even sizes
        if i == 5:
            frame = np.zeros((240, 320, 3), dtype=np.uint8)  # a resolution change is scaled to the first
        recorder.write(frame, t0 + i * 200_000_000)  # 5 fps of capture time
    recorder.close()
    recorder.close()  # idempotent
    assert recorder.frames == 10 and recorder.codec in {"libx264", "mpeg4"}
    with av.open(str(out)) as container:
        stream = container.streams.video[0]
        frames = list(container.decode(stream))
        assert (stream.width, stream.height) == (160, 120)
    assert len(frames) == 10
    times = [float(f.time) for f in frames if f.time is not None]
    assert times[-1] - times[0] == pytest.approx(1.8, abs=0.05)


def test_closing_an_unused_recorder_writes_nothing(tmp_path: Path) -> None:
    recorder = VideoRecorder(tmp_path / "none.mp4")
    recorder.close()
    assert not (tmp_path / "none.mp4").exists()
