"""What `alpr eval` prints and writes: the text table, the JSON summary and the HTML page of failures.

Pure formatting of `metrics.Summary` and the per-image results; the only I/O is `write_html`, into the
directory the user named.
"""

from __future__ import annotations

import html
import json
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from alpr_shared.evaluate.metrics import ImageResult, Summary, score_image


@dataclass(frozen=True, slots=True)
class RunInfo:
    dataset: str
    layout: str
    split: str
    detector: str  # model and version, or "none (crops)"
    recognizer: str
    regions: tuple[str, ...]
    workers: int
    date: str


def _pct(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.1%}"


def confusion_text(summary: Summary, n: int = 10) -> str:
    top = summary.top_confusions(n)
    return ", ".join(f"{op} ×{count}" for op, count in top) if top else "none"


def table(summary: Summary, info: RunInfo) -> str:
    s = summary
    recall = _pct(s.plate_recall)
    if s.plate_recall is not None and s.median_box_iou is not None:
        recall += f"  ({s.found}/{s.boxed_labels}); median box IoU {s.median_box_iou:.2f}"
    rows = [
        ("dataset", f"{info.dataset} ({info.layout} folder, split {info.split})"),
        ("models", f"detector {info.detector}; recognizer {info.recognizer}"),
        ("regions", ", ".join(info.regions) if info.regions else "all known"),
        ("images", f"{s.images}  ({s.labels} plates{f', {s.errors} unreadable' if s.errors else ''})"),
        ("plate recall (IoU ≥ 0.5)", recall),
        (
            "exact plates",
            f"{_pct(s.exact_accuracy)}  ({s.exact}/{s.labels}); O≡0: {_pct(s.exact_accuracy_o0)}",
        ),
        ("character accuracy", f"{_pct(s.char_accuracy)}  ({s.chars_correct}/{s.chars_total})"),
        ("no read", f"{s.no_read}"),
        (
            "ms/image",
            f"{s.ms_per_image:.1f}  (p50 {s.ms_quantile(0.5):.0f}, p95 {s.ms_quantile(0.95):.0f}; "
            f"wall time per image on one of {info.workers} worker{'s' if info.workers != 1 else ''})",
        ),
        ("top confusions", confusion_text(s)),
    ]
    width = max(len(k) for k, _ in rows)
    return "\n".join(f"{k:<{width}}  {v}" for k, v in rows)


def summary_json(summary: Summary, info: RunInfo) -> dict[str, Any]:
    s = summary
    return {
        "dataset": info.dataset,
        "layout": info.layout,
        "split": info.split,
        "detector": info.detector,
        "recognizer": info.recognizer,
        "regions": list(info.regions),
        "workers": info.workers,
        "date": info.date,
        "images": s.images,
        "plates": s.labels,
        "plate_recall": None if s.plate_recall is None else round(s.plate_recall, 4),
        "median_box_iou": None if s.median_box_iou is None else round(s.median_box_iou, 4),
        "exact_accuracy": round(s.exact_accuracy, 4),
        "exact_accuracy_o_equals_0": round(s.exact_accuracy_o0, 4),
        "char_accuracy": round(s.char_accuracy, 4),
        "ms_per_image": round(s.ms_per_image, 1),
        "ms_p50": round(s.ms_quantile(0.5), 1),
        "ms_p95": round(s.ms_quantile(0.95), 1),
        "exact": s.exact,
        "found": s.found,
        "no_read": s.no_read,
        "unreadable_images": s.errors,
        "top_confusions": [[op, n] for op, n in s.top_confusions(20)],
    }


def json_line(summary: Summary, info: RunInfo) -> str:
    return json.dumps(summary_json(summary, info), ensure_ascii=False, separators=(",", ":"))


_STYLE = """
body { font-family: sans-serif; margin: 1.5em; }
table { border-collapse: collapse; }
td, th { border: 1px solid #ccc; padding: 4px 8px; vertical-align: middle; text-align: left; }
th { background: #eee; }
.truth { font-family: monospace; font-size: 1.2em; color: #060; }
.read { font-family: monospace; font-size: 1.2em; color: #a00; }
.raw { font-family: monospace; color: #666; }
img { max-height: 80px; max-width: 320px; }
pre { background: #f6f6f6; padding: 1em; }
"""


def write_html(results: Sequence[ImageResult], summary: Summary, info: RunInfo, directory: Path) -> Path:
    """`directory/index.html`: the summary, then one row per plate not read exactly: the crop the
    recogniser saw, the truth, what was read (after correction, and raw), its confidence."""
    directory.mkdir(parents=True, exist_ok=True)
    rows: list[str] = []
    for result in results:
        for outcome in score_image(result):
            if outcome.exact:
                continue
            read = outcome.read
            image_name = html.escape(os.path.basename(result.image))
            if read is None:
                others = ", ".join(html.escape(r.raw or "∅") for r in result.reads) or "—"
                why = "image unreadable: " + html.escape(result.error) if result.error else "no read"
                if outcome.found is False:
                    why = "plate not detected (no box with IoU ≥ 0.5)"
                rows.append(
                    f"<tr><td>{image_name}</td><td></td><td class=truth>{html.escape(outcome.label.text)}</td>"
                    f"<td>{why}</td><td class=raw>{others}</td><td></td><td></td></tr>"
                )
                continue
            crop = f'<img src="{html.escape(read.crop_file)}" alt="crop">' if read.crop_file else ""
            found = "" if outcome.found is None else ("yes" if outcome.found else "no (IoU < 0.5)")
            rows.append(
                f"<tr><td>{image_name}</td><td>{crop}</td>"
                f"<td class=truth>{html.escape(outcome.label.text)}</td>"
                f"<td class=read>{html.escape(read.text)}</td><td class=raw>{html.escape(read.raw)}</td>"
                f"<td>{read.confidence:.3f}</td><td>{found}</td></tr>"
            )
    page = (
        "<!doctype html><html><head><meta charset=utf-8><title>alpr eval: failures</title>"
        f"<style>{_STYLE}</style></head><body>"
        f"<h1>alpr eval — {html.escape(info.dataset)}</h1>"
        f"<pre>{html.escape(table(summary, info))}</pre>"
        f"<h2>{len(rows)} plates not read exactly</h2>"
        "<table><tr><th>image</th><th>crop read</th><th>truth</th><th>read</th><th>raw OCR</th>"
        "<th>confidence</th><th>box found</th></tr>" + "".join(rows) + "</table></body></html>"
    )
    path = directory / "index.html"
    path.write_text(page, encoding="utf-8")
    return path
