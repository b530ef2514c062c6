"""The plate recogniser's network: a small CRNN (convolutions → BiLSTM → per-column classes) for CTC.

Input (N, 1, 48, 160) grey (see `alpr_ocr.recognizer.crnn_input`); output (N, 40, 37) logits over the CTC
blank and A–Z 0–9, one per 4-pixel column of the input. About 0.4M parameters: small enough to train on a
2-core CPU in half an hour and to run in ~2 ms per crop on ONNX Runtime.

Training only: imports torch. The run-time recogniser uses the exported ONNX file.
"""

from __future__ import annotations

import warnings
from pathlib import Path

import torch
from torch import nn

from alpr_ocr.recognizer import CRNN_CLASSES, CRNN_HEIGHT, CRNN_WIDTH

TIME_STEPS = CRNN_WIDTH // 4


def _block(cin: int, cout: int) -> list[nn.Module]:
    return [nn.Conv2d(cin, cout, 3, padding=1, bias=False), nn.BatchNorm2d(cout), nn.ReLU(inplace=True)]


class PlateCRNN(nn.Module):
    def __init__(self, num_classes: int = CRNN_CLASSES, hidden: int = 96) -> None:
        super().__init__()
        # Narrow early layers: the 48 x 160 input makes them the expensive ones on a CPU.
        self.features = nn.Sequential(
            *_block(1, 16),
            nn.MaxPool2d(2, 2),  # 24 x 80
            *_block(16, 32),
            nn.MaxPool2d(2, 2),  # 12 x 40
            *_block(32, 64),
            *_block(64, 64),
            nn.MaxPool2d((2, 1), (2, 1)),  # 6 x 40
            *_block(64, 96),
            *_block(96, 96),
            nn.MaxPool2d((2, 1), (2, 1)),  # 3 x 40
            nn.Conv2d(96, 128, (3, 1), bias=False),  # 1 x 40
            nn.BatchNorm2d(128),
            nn.ReLU(inplace=True),
        )
        self.dropout = nn.Dropout(0.1)
        self.rnn = nn.LSTM(128, hidden, bidirectional=True, batch_first=True)
        self.classifier = nn.Linear(2 * hidden, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(N, 1, 48, 160) → (N, T, classes) logits."""
        f = self.features(x).squeeze(2).permute(0, 2, 1)  # N, T, C
        f, _ = self.rnn(self.dropout(f))
        out: torch.Tensor = self.classifier(f)
        return out


class _WithSoftmax(nn.Module):
    def __init__(self, model: PlateCRNN) -> None:
        super().__init__()
        self.model = model

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.softmax(self.model(x), dim=-1)


def parameter_count(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def export_onnx(model: PlateCRNN, path: Path, metadata: dict[str, str]) -> None:
    """ONNX (opset 17) with a dynamic batch axis and softmax probabilities as output; `metadata` goes
    into the file's custom metadata (alphabet, input size, how it was trained)."""
    import onnx  # noqa: PLC0415 - export-time tool only

    model.eval()
    dummy = torch.zeros(1, 1, CRNN_HEIGHT, CRNN_WIDTH)
    tmp = path.with_suffix(".onnx.tmp")
    path.parent.mkdir(parents=True, exist_ok=True)
    with warnings.catch_warnings():
        # The tracing exporter warns about tracing itself (TracerWarning, which torch silences at import
        # but a test's warning filter does not) and that an LSTM traced at batch 1 may not run at other
        # batch sizes: it does here, as no initial state is an input (the tests run batches of 2).
        warnings.simplefilter("ignore")
        torch.onnx.export(
            _WithSoftmax(model),
            (dummy,),
            str(tmp),
            input_names=["image"],
            output_names=["probs"],
            dynamic_axes={"image": {0: "batch"}, "probs": {0: "batch"}},
            opset_version=17,
            dynamo=False,
        )
    proto = onnx.load(str(tmp))
    for key, value in metadata.items():
        entry = proto.metadata_props.add()
        entry.key, entry.value = key, value
    onnx.save(proto, str(tmp))
    tmp.replace(path)
