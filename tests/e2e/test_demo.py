"""The README's main command at this stage: `alpr demo` ingests a generated video on two cameras in a
separate process and reads every frame back through shared memory, leaving nothing behind."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.e2e


def test_demo_runs_clean(tmp_path: Path) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "alpr_shared.cli", "demo", "--seconds", "2", "--workdir", str(tmp_path)],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "demo: OK" in result.stdout
    summary = re.search(r"demo: (\d+) frames from 2 camera\(s\).*stale (\d+)", result.stdout)
    assert summary is not None, result.stdout
    frames, stale = int(summary.group(1)), int(summary.group(2))
    # 2 cameras × 2 s × 25 fps = 100 frames; the first few may go out before the subscriber has joined.
    assert frames >= 80
    assert stale == 0
    assert "shared-memory rings left behind: 0" in result.stdout
