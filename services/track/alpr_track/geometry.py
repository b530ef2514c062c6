"""Box and image-plane geometry for the tracker: IoU matrices, containment, zones, counting lines.

Pure functions on numpy arrays of boxes (x1, y1, x2, y2) in frame pixels and on (x, y) points. No I/O.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import numpy.typing as npt

Array = npt.NDArray[np.float64]
Point = tuple[float, float]


def _intersection(a: Array, b: Array) -> Array:
    """Intersection areas (N, M) of boxes a (N,4) and b (M,4)."""
    w = np.minimum(a[:, None, 2], b[None, :, 2]) - np.maximum(a[:, None, 0], b[None, :, 0])
    h = np.minimum(a[:, None, 3], b[None, :, 3]) - np.maximum(a[:, None, 1], b[None, :, 1])
    out: Array = np.clip(w, 0.0, None) * np.clip(h, 0.0, None)
    return out


def area(boxes: Array) -> Array:
    return np.clip(boxes[:, 2] - boxes[:, 0], 0.0, None) * np.clip(boxes[:, 3] - boxes[:, 1], 0.0, None)


def iou_matrix(a: Array, b: Array) -> Array:
    """IoU of every box of a (N,4) with every box of b (M,4)."""
    if a.shape[0] == 0 or b.shape[0] == 0:
        return np.zeros((a.shape[0], b.shape[0]))
    inter = _intersection(a, b)
    union = area(a)[:, None] + area(b)[None, :] - inter
    out: Array = inter / np.maximum(union, 1e-9)
    return out


def containment_matrix(inner: Array, outer: Array) -> Array:
    """Share of each inner box's area (N) that lies inside each outer box (M): (N, M) in [0, 1]."""
    if inner.shape[0] == 0 or outer.shape[0] == 0:
        return np.zeros((inner.shape[0], outer.shape[0]))
    out: Array = _intersection(inner, outer) / np.maximum(area(inner), 1e-9)[:, None]
    return out


def point_in_polygon(point: Point, polygon: Sequence[Point]) -> bool:
    """Even-odd rule; a point exactly on an edge may fall either way."""
    x, y = point
    inside = False
    n = len(polygon)
    j = n - 1
    for i in range(n):
        xi, yi = polygon[i]
        xj, yj = polygon[j]
        if (yi > y) != (yj > y) and x < (xj - xi) * (y - yi) / (yj - yi) + xi:
            inside = not inside
        j = i
    return inside


def _side(a: Point, b: Point, p: Point) -> float:
    """> 0 when p is left of the directed line a→b (in image coordinates, y down), < 0 right, 0 on it."""
    return (b[0] - a[0]) * (p[1] - a[1]) - (b[1] - a[1]) * (p[0] - a[0])


def crossing(line_start: Point, line_end: Point, p0: Point, p1: Point) -> int:
    """+1 or -1 when the step p0→p1 crosses the segment line_start→line_end (the sign says from which
    side), 0 when it does not. Touching the line and stepping back is not a crossing."""
    s0 = _side(line_start, line_end, p0)
    s1 = _side(line_start, line_end, p1)
    if s0 == 0 or (s0 > 0) == (s1 > 0) or s1 == 0:
        return 0
    # Both endpoints of the line must be on opposite sides of the step too (segment, not infinite line).
    t0 = _side(p0, p1, line_start)
    t1 = _side(p0, p1, line_end)
    if (t0 > 0 and t1 > 0) or (t0 < 0 and t1 < 0):
        return 0
    return 1 if s0 < 0 else -1
