"""`alpr models train-ocr`: train the plate CRNN from a seed, export it to ONNX, measure it, record it.

    alpr models train-ocr [--seed N] [--steps S] [--finetune-steps F] [--minutes M] [--out DIR] [--install]

Two stages. 1: synthetic plates only (`synth.sample`), one-cycle learning rate. 2: fine-tuning on the
*training* part of the labelled US crops (`alpr_shared.datasets.crops_split`), augmented, mixed half and half
with synthetic plates. The held-out crops are read only once, at the end, to measure the exported model; the
scene sets (`us`, `eu`) are never read here.

Reproducible: every random choice comes from `--seed` (data stream, initial weights, augmentation), torch
runs with a fixed thread count, and the steps (not the wall clock) define the run. `--minutes` is a safety
cap: if it cuts a stage short, the record says so and the run no longer matches its seed's figures.

The defaults are the recipe of the shipped `plate-crnn` (`--seed 1`: 4000 + 800 steps of 64 plates, ~34 min
on two quiet cores at ~155 plates/s; the first shipped model, 1500 + 400 steps, read 5 points fewer `us`
plates in the ensemble: ACCURACY.md).

Writes into `--out`: `plate-crnn.onnx`, `checkpoint.pt`, `record.json` (data, steps, seed, date, held-out
accuracy, timing) and `manifest-entry.yaml`. `--install` also copies the ONNX file into the package
(`alpr_ocr/models/`) and replaces the `plate-crnn` entry of the model manifest (models.yaml).

Training only: imports torch, which the run-time never needs.
"""

# ruff: noqa: T201 - a command-line tool: its progress output is for the user

from __future__ import annotations

import argparse
import datetime as dt
import hashlib
import json
import os
import platform
import random
import shutil
import sys
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import numpy.typing as npt

from alpr_ocr.recognizer import (
    CRNN_HEIGHT,
    CRNN_MODEL_NAME,
    CRNN_WIDTH,
    PLATE_ALPHABET,
    CrnnRecognizer,
    Image,
    RecognizerOptions,
    crnn_input,
)
from alpr_ocr.training import synth

DEFAULT_OUT = Path("build/plate-crnn")
PACKAGE_MODEL = Path(__file__).resolve().parent.parent / "models" / "plate-crnn.onnx"
MANIFEST_BEGIN = "  # >>> plate-crnn: written by `alpr models train-ocr --install`"
MANIFEST_END = "  # <<< plate-crnn"


def normalise_label(text: str) -> str:
    return "".join(ch for ch in text.upper() if ch in PLATE_ALPHABET)


def encode(label: str) -> list[int]:
    return [PLATE_ALPHABET.index(ch) + 1 for ch in label]


# --- data ------------------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class RealCrop:
    image: Image
    label: str


def load_crops(labels: Sequence[Any]) -> list[RealCrop]:
    """Read labelled crops (`alpr_shared.datasets.CropLabel`) into memory, labels normalised."""
    out: list[RealCrop] = []
    for item in labels:
        image = cv2.imread(str(item.image), cv2.IMREAD_COLOR)
        if image is None:
            raise FileNotFoundError(f"cannot read {item.image}")
        label = normalise_label(item.plate)
        if label:
            out.append(RealCrop(image, label))  # type: ignore[arg-type]
    return out


def augment_real(image: Image, rng: random.Random) -> Image:
    """A different camera's view of a real crop: margins, rotation, scale, blur, light, noise, JPEG."""
    h, w = image.shape[:2]
    m = [rng.uniform(-0.04, 0.1) for _ in range(4)]
    pad = int(max(h, w) * 0.15) + 2
    padded = cv2.copyMakeBorder(image, pad, pad, pad, pad, cv2.BORDER_REPLICATE)
    centre = (padded.shape[1] / 2, padded.shape[0] / 2)
    rot = cv2.getRotationMatrix2D(centre, rng.uniform(-4, 4), 1.0)
    rot[0, 1] += rng.uniform(-0.08, 0.08)  # a little shear
    padded = cv2.warpAffine(padded, rot, (padded.shape[1], padded.shape[0]), borderMode=cv2.BORDER_REPLICATE)
    x0 = int(pad - m[0] * w)
    x1 = int(pad + w + m[1] * w)
    y0 = int(pad - m[2] * h)
    y1 = int(pad + h + m[3] * h)
    crop = padded[max(0, y0) : y1, max(0, x0) : x1]
    target_h = int(rng.choice((rng.uniform(20, 40), rng.uniform(35, 80), float(crop.shape[0]))))
    target_h = max(16, min(target_h, crop.shape[0]))
    target_w = max(16, int(crop.shape[1] * target_h / crop.shape[0]))
    out: Any = cv2.resize(crop, (target_w, target_h), interpolation=cv2.INTER_AREA).astype(np.float32)
    if rng.random() < 0.3:
        out = cv2.GaussianBlur(out, (3, 3), rng.uniform(0.3, 1.0))
    out = out * rng.uniform(0.7, 1.2) + rng.uniform(-25, 25)
    out += np.random.default_rng(rng.randrange(1 << 30)).normal(0, rng.uniform(0, 6), out.shape)
    result: Any = np.clip(out, 0, 255).astype(np.uint8)
    if rng.random() < 0.5:
        ok, buf = cv2.imencode(".jpg", result, [cv2.IMWRITE_JPEG_QUALITY, rng.randint(30, 90)])
        if ok:
            result = cv2.imdecode(buf, cv2.IMREAD_COLOR)
    view: Image = result
    return view


Batch = tuple[npt.NDArray[np.float32], list[str]]


def batches(
    seed: int, batch_size: int, real: Sequence[RealCrop] = (), real_share: float = 0.0
) -> Iterator[Batch]:
    """An endless, seed-determined stream of (inputs (N, 1, 48, 160), labels)."""
    rng = random.Random(seed)  # noqa: S311 - reproducible data, not a secret
    while True:
        xs: list[npt.NDArray[np.float32]] = []
        labels: list[str] = []
        for _ in range(batch_size):
            if real and rng.random() < real_share:
                crop = rng.choice(real)
                xs.append(crnn_input(augment_real(crop.image, rng)))
                labels.append(crop.label)
            else:
                s = synth.sample(rng)
                xs.append(crnn_input(s.image, rows=s.rows))
                labels.append(s.label)
        yield np.stack(xs), labels


def _stream_worker(
    seed: int, batch_size: int, real: Sequence[RealCrop], real_share: float, queue: Any
) -> None:
    import queue as queue_module  # noqa: PLC0415

    cv2.setNumThreads(1)
    parent = os.getppid()
    for batch in batches(seed, batch_size, real, real_share):
        while True:  # a killed trainer must not leave its renderer running
            if os.getppid() != parent:
                return
            try:
                queue.put(batch, timeout=5)
                break
            except queue_module.Full:
                continue


class BatchProducer:
    """`batches` in a child process (one core renders while the other trains); order is unchanged, so the
    stream stays the same function of the seed."""

    def __init__(
        self, seed: int, batch_size: int, real: Sequence[RealCrop] = (), real_share: float = 0.0
    ) -> None:
        import multiprocessing as mp  # noqa: PLC0415

        ctx = mp.get_context("fork")
        self._queue = ctx.Queue(maxsize=6)
        self._proc = ctx.Process(
            target=_stream_worker, args=(seed, batch_size, list(real), real_share, self._queue), daemon=True
        )
        self._proc.start()

    def __iter__(self) -> Iterator[Batch]:
        return self

    def __next__(self) -> Batch:
        batch: Batch = self._queue.get(timeout=300)
        return batch

    def close(self) -> None:
        self._proc.terminate()
        self._proc.join(timeout=10)
        self._queue.close()
        self._queue.join_thread()


# --- evaluation ----------------------------------------------------------------------------------------


def levenshtein(a: str, b: str) -> int:
    prev = list(range(len(b) + 1))
    for i, ca in enumerate(a, 1):
        cur = [i]
        for j, cb in enumerate(b, 1):
            cur.append(min(prev[j] + 1, cur[j - 1] + 1, prev[j - 1] + (ca != cb)))
        prev = cur
    return prev[-1]


@dataclass(frozen=True, slots=True)
class Score:
    images: int
    exact: int
    char_accuracy: float
    ms_per_crop: float
    errors: list[tuple[str, str]]

    @property
    def exact_accuracy(self) -> float:
        return self.exact / self.images if self.images else 0.0


def score_onnx(path: Path, crops: Sequence[RealCrop]) -> Score:
    """Read each crop with the run-time recogniser on the ONNX file; strict exact match (O ≠ 0)."""
    rec = CrnnRecognizer.open(RecognizerOptions(backend=CRNN_MODEL_NAME, intra_op_threads=1), path)
    try:
        exact, dist, chars, elapsed = 0, 0, 0, 0.0
        errors: list[tuple[str, str]] = []
        for crop in crops:
            start = time.perf_counter()
            text = rec.read(crop.image).text
            elapsed += time.perf_counter() - start
            exact += text == crop.label
            dist += levenshtein(text, crop.label)
            chars += len(crop.label)
            if text != crop.label:
                errors.append((crop.label, text))
    finally:
        rec.close()
    n = len(crops)
    return Score(n, exact, max(0.0, 1 - dist / max(1, chars)), elapsed / max(1, n) * 1000, errors)


# --- training -----------------------------------------------------------------------------------------


def _greedy_texts(logits: Any) -> list[str]:
    best = logits.argmax(-1).cpu().numpy()
    out = []
    for row in best:
        chars, prev = [], 0
        for c in row.tolist():
            if c not in (prev, 0):
                chars.append(PLATE_ALPHABET[c - 1])
            prev = c
        out.append("".join(chars))
    return out


def _run_stage(
    name: str,
    model: Any,
    stream: Iterator[Batch],
    steps: int,
    *,
    max_lr: float,
    one_cycle: bool,
    deadline: float,
    validation: Batch,
    log_every: int = 50,
    eval_every: int = 500,
) -> int:
    import torch  # noqa: PLC0415

    if steps <= 0:
        return 0
    opt = torch.optim.AdamW(model.parameters(), lr=max_lr, weight_decay=1e-4)
    if one_cycle:
        sched: Any = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=max_lr, total_steps=steps, pct_start=0.1)
    else:
        sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=steps, eta_min=max_lr * 0.02)
    ctc = torch.nn.CTCLoss(blank=0, zero_infinity=True)
    start, seen, smooth = time.monotonic(), 0, None
    done = 0
    for step in range(1, steps + 1):
        x, labels = next(stream)
        targets = torch.tensor([i for lab in labels for i in encode(lab)], dtype=torch.long)
        target_lengths = torch.tensor([len(lab) for lab in labels], dtype=torch.long)
        model.train()
        logits = model(torch.from_numpy(x))
        log_probs = logits.log_softmax(-1).permute(1, 0, 2)  # T, N, C
        input_lengths = torch.full((x.shape[0],), log_probs.shape[0], dtype=torch.long)
        loss = ctc(log_probs, targets, input_lengths, target_lengths)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 5.0)
        opt.step()
        sched.step()
        seen += x.shape[0]
        done = step
        value = float(loss.detach())
        smooth = value if smooth is None else 0.95 * smooth + 0.05 * value
        elapsed = time.monotonic() - start
        if step % log_every == 0 or step == steps:
            rate = seen / max(elapsed, 1e-6)
            eta = (steps - step) * elapsed / step
            print(
                f"[{name}] step {step}/{steps} loss {smooth:.3f} lr {sched.get_last_lr()[0]:.2e} "
                f"{rate:.0f} samples/s elapsed {elapsed / 60:.1f} min eta {eta / 60:.1f} min",
                flush=True,
            )
        if step % eval_every == 0 or step == steps:
            acc = _validate(model, validation)
            print(f"[{name}] step {step}: synthetic validation exact {acc:.1%}", flush=True)
        if time.monotonic() > deadline:
            print(
                f"[{name}] time budget reached at step {step}/{steps}: stopping this stage early", flush=True
            )
            break
    return done


def _validate(model: Any, validation: Batch) -> float:
    import torch  # noqa: PLC0415

    model.eval()
    with torch.no_grad():
        texts = _greedy_texts(model(torch.from_numpy(validation[0])))
    return sum(t == lab for t, lab in zip(texts, validation[1], strict=True)) / len(texts)


def _manifest_entry(record: dict[str, Any]) -> str:
    held = record["heldout"]
    lines = [
        MANIFEST_BEGIN,
        f"  {CRNN_MODEL_NAME}:",
        "    task: ocr",
        "    description: >-",
        f"      Plate recogniser trained by this project: CRNN ({record['parameters']} parameters, "
        f"{CRNN_HEIGHT}x{CRNN_WIDTH} grey, BiLSTM, CTC over A-Z 0-9), stacked rows read side by side.",
        f"      Held-out US crops ({held['images']}, crops_split seed {record['split_seed']}): "
        f"exact {held['exact_accuracy']:.1%}, char {held['char_accuracy']:.1%}, {held['ms_per_crop']:.1f} ms/crop.",
        "    licence: Apache-2.0 (weights trained by this project; fine-tuned on AGPL-3.0 OpenALPR benchmark crops)",
        "    file: plate-crnn.onnx",
        "    labels: [text]",
        "    source:",
        "      kind: package",
        "      package: alpr-platform",
        "      member: alpr_ocr/models/plate-crnn.onnx",
        f'      sha256: "{record["sha256"]}"',
        f"      size: {record['size']}",
        "    training:",
        f"      command: {record['command']}",
        f"      seed: {record['seed']}",
        f"      steps: {{synthetic: {record['steps']['synthetic']}, finetune: {record['steps']['finetune']}}}",
        f"      batch: {record['batch']}",
        f"      data: {record['data']}",
        f"      date: {record['date']}",
        f"      minutes: {record['minutes']:.1f}",
        f"      heldout_exact: {held['exact_accuracy']:.4f}",
        f"      heldout_char: {held['char_accuracy']:.4f}",
        f"      torch: {record['torch']}",
        MANIFEST_END,
    ]
    return "\n".join(lines) + "\n"


def install(out_dir: Path, manifest_path: Path | None = None) -> None:
    """Copy the trained ONNX into the package and replace the manifest's plate-crnn entry."""
    PACKAGE_MODEL.parent.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(out_dir / "plate-crnn.onnx", PACKAGE_MODEL)
    # The run's full record (held-out misreads, timing, host) travels with the file.
    shutil.copyfile(out_dir / "record.json", PACKAGE_MODEL.with_suffix(".record.json"))
    install_manifest(out_dir, manifest_path)


def install_manifest(out_dir: Path, manifest_path: Path | None = None) -> None:
    """Replace the block between the plate-crnn markers of models.yaml (or append it) with the run's entry."""
    if manifest_path is None:
        import alpr_detect  # noqa: PLC0415 - the manifest lives with the model store

        manifest_path = Path(alpr_detect.__file__).with_name("models.yaml")
    entry = (out_dir / "manifest-entry.yaml").read_text(encoding="utf-8")
    text = manifest_path.read_text(encoding="utf-8")
    if MANIFEST_BEGIN in text:
        head, rest = text.split(MANIFEST_BEGIN, 1)
        _, tail = rest.split(MANIFEST_END + "\n", 1)
        text = head + entry + tail
    else:
        text = text.rstrip("\n") + "\n" + entry
    manifest_path.write_text(text, encoding="utf-8")


def main(argv: Sequence[str]) -> int:  # noqa: PLR0915 - the run's steps, in order, for one reader
    parser = argparse.ArgumentParser(
        prog="alpr models train-ocr",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--seed", type=int, default=1, help="every random choice derives from it (default 1)")
    parser.add_argument("--steps", type=int, default=4000, help="synthetic-only steps (default 4000)")
    parser.add_argument("--finetune-steps", type=int, default=800, help="steps with real crops (default 800)")
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument(
        "--minutes", type=float, default=120.0, help="safety cap on the whole run (default 120)"
    )
    parser.add_argument(
        "--threads",
        type=int,
        default=1,
        help="torch threads (default 1: the plate renderer takes the 2nd core)",
    )
    parser.add_argument(
        "--out", type=Path, default=DEFAULT_OUT, help=f"output directory (default {DEFAULT_OUT})"
    )
    parser.add_argument("--init", type=Path, help="start from this checkpoint.pt (e.g. to fine-tune only)")
    parser.add_argument(
        "--real-share", type=float, default=0.5, help="share of real crops in fine-tune batches"
    )
    parser.add_argument(
        "--validation", type=int, default=512, help="synthetic validation plates (own seed; progress only)"
    )
    parser.add_argument("--install", action="store_true", help="copy the model into the package and manifest")
    parser.add_argument("--no-eval", action="store_true", help="skip the held-out measurement (tests)")
    args = parser.parse_args(list(argv))
    if args.steps < 0 or args.finetune_steps < 0 or args.batch < 1 or args.validation < 1:
        parser.error("steps and batch must be positive")

    import torch  # noqa: PLC0415 - training only

    from alpr_ocr.training.model import PlateCRNN, export_onnx, parameter_count  # noqa: PLC0415
    from alpr_shared.datasets import CROPS_SPLIT_SEED, crops_split  # noqa: PLC0415

    started = time.monotonic()
    deadline_total = started + args.minutes * 60
    torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)
    cv2.setNumThreads(1)
    args.out.mkdir(parents=True, exist_ok=True)
    command = "alpr models train-ocr " + " ".join(argv)
    print(
        f"train-ocr: seed {args.seed}, {args.steps} synthetic + {args.finetune_steps} fine-tune steps, out {args.out}"
    )

    model = PlateCRNN()
    if args.init is not None:
        state = torch.load(args.init, map_location="cpu", weights_only=True)
        model.load_state_dict(state["model"])
        print(f"train-ocr: initial weights from {args.init}")
    print(f"train-ocr: {parameter_count(model):,} parameters")
    validation = next(batches(args.seed + 7919, args.validation))

    train_labels: list[Any] = []
    heldout_labels: list[Any] = []
    if args.finetune_steps > 0 or not args.no_eval:
        train_labels, heldout_labels = crops_split()
    total = max(1, args.steps + args.finetune_steps)
    stage1_deadline = started + args.minutes * 60 * args.steps / total
    producer = BatchProducer(args.seed, args.batch)
    try:
        done1 = _run_stage(
            "synthetic",
            model,
            producer,
            args.steps,
            max_lr=2e-3,
            one_cycle=True,
            deadline=stage1_deadline,
            validation=validation,
        )
    finally:
        producer.close()
    torch.save(
        {"model": model.state_dict(), "stage": "synthetic", "steps": done1}, args.out / "checkpoint.pt"
    )
    done2 = 0
    if args.finetune_steps > 0:
        real = load_crops(train_labels)
        print(
            f"train-ocr: fine-tuning on {len(real)} training crops (held out: {len(heldout_labels)}, never read)"
        )
        producer = BatchProducer(args.seed + 1, args.batch, real, args.real_share)
        try:
            done2 = _run_stage(
                "finetune",
                model,
                producer,
                args.finetune_steps,
                max_lr=5e-4,
                one_cycle=False,
                deadline=deadline_total,
                validation=validation,
            )
        finally:
            producer.close()
        torch.save(
            {"model": model.state_dict(), "stage": "finetune", "steps": done2}, args.out / "checkpoint.pt"
        )
    minutes = (time.monotonic() - started) / 60
    onnx_path = args.out / "plate-crnn.onnx"
    today = dt.datetime.now(dt.UTC).strftime("%Y-%m-%d")
    data = "synthetic plates (alpr_ocr.training.synth)" + (
        f" + {len(train_labels)} training crops of plate-crops-us (crops_split seed {CROPS_SPLIT_SEED})"
        if args.finetune_steps > 0
        else ""
    )
    export_onnx(
        model,
        onnx_path,
        {
            "alphabet": PLATE_ALPHABET,
            "input": f"1x{CRNN_HEIGHT}x{CRNN_WIDTH} grey, per-image standardised (alpr_ocr.recognizer.crnn_input)",
            "stacked_rows": "cut at the least-inked middle row, laid side by side, top row first",
            "seed": str(args.seed),
            "steps": f"{done1}+{done2}",
            "data": data,
            "date": today,
        },
    )
    digest = hashlib.sha256(onnx_path.read_bytes()).hexdigest()
    print(f"train-ocr: exported {onnx_path} ({onnx_path.stat().st_size:,} bytes, sha256 {digest[:12]}…)")
    heldout: dict[str, Any] = {
        "images": 0,
        "exact": 0,
        "exact_accuracy": 0.0,
        "char_accuracy": 0.0,
        "ms_per_crop": 0.0,
    }
    if not args.no_eval:
        score = score_onnx(onnx_path, load_crops(heldout_labels))
        heldout = {
            "images": score.images,
            "exact": score.exact,
            "exact_accuracy": score.exact_accuracy,
            "char_accuracy": score.char_accuracy,
            "ms_per_crop": score.ms_per_crop,
            "errors": [f"{truth}->{read}" for truth, read in score.errors],
        }
        print(
            f"train-ocr: held-out crops: exact {score.exact}/{score.images} = {score.exact_accuracy:.1%}, "
            f"char {score.char_accuracy:.1%}, {score.ms_per_crop:.1f} ms/crop"
        )
        print("train-ocr: misreads (truth->read): " + " ".join(heldout["errors"]))
    record = {
        "model": CRNN_MODEL_NAME,
        "command": command,
        "seed": args.seed,
        "steps": {"synthetic": done1, "finetune": done2, "planned": [args.steps, args.finetune_steps]},
        "cut_short": done1 < args.steps or done2 < args.finetune_steps,
        "batch": args.batch,
        "data": data,
        "split_seed": CROPS_SPLIT_SEED,
        "date": today,
        "minutes": minutes,
        "parameters": parameter_count(model),
        "sha256": digest,
        "size": onnx_path.stat().st_size,
        "heldout": heldout,
        "torch": torch.__version__,
        "threads": args.threads,
        "host": f"{platform.machine()} {os.cpu_count()} cpus",
    }
    (args.out / "record.json").write_text(json.dumps(record, indent=2) + "\n", encoding="utf-8")
    (args.out / "manifest-entry.yaml").write_text(_manifest_entry(record), encoding="utf-8")
    print(f"train-ocr: record {args.out / 'record.json'}; manifest entry {args.out / 'manifest-entry.yaml'}")
    if record["cut_short"]:
        print("train-ocr: warning: the time cap cut a stage short; the seed alone no longer reproduces it")
    if args.install:
        install(args.out)
        print(f"train-ocr: installed {PACKAGE_MODEL} and its manifest entry")
    print(f"train-ocr: done in {minutes:.1f} min")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
