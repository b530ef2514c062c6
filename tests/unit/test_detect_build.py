"""Detect settings resolved at build time."""

from __future__ import annotations

from alpr_detect.build import intra_op_threads


def test_intra_op_threads_default_is_half_the_cores() -> None:
    assert intra_op_threads(0, cores=2) == 1
    assert intra_op_threads(0, cores=8) == 4
    assert intra_op_threads(0, cores=1) == 1
    assert intra_op_threads(3, cores=8) == 3  # configured: kept
