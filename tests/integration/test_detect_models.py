"""`alpr models`: the manifest, fetch from a local HTTP server with a checksum, and clear errors for a
missing or corrupt model (in the store, in ONNX Runtime, and from `alpr detect` itself)."""

from __future__ import annotations

import hashlib
import http.server
import os
import subprocess
import sys
import threading
import tomllib
from collections.abc import Iterator
from pathlib import Path

import pytest

from alpr_detect.backends.base import ModelFileError
from alpr_detect.backends.ort import OrtBackend
from alpr_detect.models import (
    EXPORT_REQUIREMENTS,
    ModelMissingError,
    ModelStore,
    ProvisionError,
    default_models_dir,
    ensure_provisioned,
    load_manifest,
)

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def plate_onnx() -> Path:
    """The real plate model, provisioned into the user's models cache (exported once if missing)."""
    return ensure_provisioned(ModelStore(default_models_dir()), "plate-yolov8n")


@pytest.fixture
def http_dir(tmp_path: Path) -> Iterator[tuple[str, Path]]:
    """A local HTTP server on a free port serving `tmp_path/www`."""
    root = tmp_path / "www"
    root.mkdir()

    class Handler(http.server.SimpleHTTPRequestHandler):
        def __init__(self, *args: object, **kwargs: object) -> None:
            super().__init__(*args, directory=str(root), **kwargs)  # type: ignore[arg-type]

        def log_message(self, format: str, *args: object) -> None:
            return

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}", root
    finally:
        server.shutdown()
        server.server_close()
        thread.join(5)


def _url_manifest(url: str, sha: str | None) -> str:
    return f"""
models:
  plate-yolov8n:
    task: plate
    description: test copy
    licence: AGPL-3.0-or-later
    file: plate-yolov8n.onnx
    labels: [plate]
    source: {{kind: url, url: "{url}", sha256: {f'"{sha}"' if sha else "null"}}}
"""


def test_manifest_records_source_licence_and_checksum() -> None:
    manifest = load_manifest()
    plate = manifest["plate-yolov8n"]
    assert plate.source.kind == "package" and plate.source.package == "fastanpr==0.1.13"
    assert plate.source.member == "fastanpr/best.pt"
    assert plate.source.sha256 is not None and len(plate.source.sha256) == 64
    assert "AGPL-3.0" in plate.licence
    assert manifest["vehicle-yolov8n-coco"].coco_classes == {2: "car", 3: "motorcycle", 5: "bus", 7: "truck"}


def test_export_requirements_match_the_pyproject_extra() -> None:
    extra = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["optional-dependencies"]["export"]
    assert sorted(r for group in EXPORT_REQUIREMENTS for r in group) == sorted(extra)


def test_models_dir_resolution(tmp_path: Path) -> None:
    assert default_models_dir(tmp_path / "x") == tmp_path / "x"
    assert default_models_dir(None, {"ALPR_MODELS_DIR": str(tmp_path)}) == tmp_path
    assert default_models_dir(None, {"XDG_CACHE_HOME": str(tmp_path)}) == tmp_path / "alpr" / "models"


def test_provisioned_model_verifies_and_has_dynamic_batch(plate_onnx: Path) -> None:
    store = ModelStore(plate_onnx.parent)
    result = store.verify("plate-yolov8n", load=True)
    assert result.ok, result.detail
    backend = OrtBackend(plate_onnx, providers=["CPUExecutionProvider"])
    try:
        assert backend.dynamic_batch
        assert backend.metadata()["names"] == "{0: 'License_Plate'}"
    finally:
        backend.close()


def test_fetch_from_local_http_server_with_checksum(
    plate_onnx: Path, http_dir: tuple[str, Path], tmp_path: Path
) -> None:
    base, root = http_dir
    payload = plate_onnx.read_bytes()
    (root / "plate.onnx").write_bytes(payload)
    sha = hashlib.sha256(payload).hexdigest()
    store = ModelStore(tmp_path / "models", load_manifest(_url_manifest(f"{base}/plate.onnx", sha)))
    source = store.fetch_source("plate-yolov8n")
    assert source.read_bytes() == payload
    store.install_onnx("plate-yolov8n", source, sha, "fetch")
    assert store.verify("plate-yolov8n", load=True).ok
    assert store.require("plate-yolov8n") == tmp_path / "models" / "plate-yolov8n.onnx"


def test_fetch_refuses_bad_checksum_missing_checksum_and_http_errors(
    http_dir: tuple[str, Path], tmp_path: Path
) -> None:
    base, root = http_dir
    (root / "model.onnx").write_bytes(b"not the model you expected")
    store = ModelStore(tmp_path / "m", load_manifest(_url_manifest(f"{base}/model.onnx", "0" * 64)))
    with pytest.raises(ProvisionError, match="checksum mismatch"):
        store.fetch_source("plate-yolov8n")
    assert not any((tmp_path / "m").rglob("*.onnx*")), "a failed download must leave nothing behind"
    unchecked = ModelStore(tmp_path / "m", load_manifest(_url_manifest(f"{base}/model.onnx", None)))
    with pytest.raises(ProvisionError, match="--sha256"):
        unchecked.fetch_source("plate-yolov8n")
    with pytest.raises(ProvisionError, match="HTTP 404"):
        unchecked.fetch_source("plate-yolov8n", url=f"{base}/missing.onnx", sha256="0" * 64)


def test_missing_model_names_the_command(tmp_path: Path) -> None:
    store = ModelStore(tmp_path)
    with pytest.raises(ModelMissingError, match="alpr models export plate-yolov8n"):
        store.require("plate-yolov8n")
    with pytest.raises(ModelMissingError, match="unknown model"):
        store.require("nope")
    with pytest.raises(ModelFileError, match="alpr models export"):
        OrtBackend(tmp_path / "absent.onnx")


def test_corrupt_model_is_a_clear_error(plate_onnx: Path, tmp_path: Path) -> None:
    store = ModelStore(tmp_path)
    store.install_onnx(
        "plate-yolov8n", plate_onnx, load_manifest()["plate-yolov8n"].source.sha256 or "", "test"
    )
    target = tmp_path / "plate-yolov8n.onnx"
    data = bytearray(target.read_bytes())
    data[len(data) // 2 : len(data) // 2 + 64] = b"\x00" * 64
    target.write_bytes(bytes(data))
    with pytest.raises(ModelMissingError, match=r"failed verification.*alpr models export plate-yolov8n"):
        store.require("plate-yolov8n")
    garbage = tmp_path / "garbage.onnx"
    garbage.write_bytes(b"\x08\x07garbage" * 100)
    with pytest.raises(ModelFileError, match="corrupt or not an ONNX model"):
        OrtBackend(garbage)
    cli = subprocess.run(
        [
            sys.executable,
            "-m",
            "alpr_shared.cli",
            "models",
            "--models-dir",
            str(tmp_path),
            "verify",
            "plate-yolov8n",
        ],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert cli.returncode == 1 and "FAILED" in cli.stdout and "alpr models export" in cli.stdout


def test_detect_service_without_model_exits_with_one_clear_line(tmp_path: Path) -> None:
    env = {
        **os.environ,
        "ALPR_DETECT__MODELS_DIR": str(tmp_path / "empty"),
        "ALPR_RUNTIME_DIR": str(tmp_path),
    }
    proc = subprocess.run(
        [sys.executable, "-m", "alpr_shared.cli", "detect", "--metrics-port", "0", "--log-format", "json"],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
        env=env,
    )
    assert proc.returncode == 2, proc.stderr
    assert "alpr models export plate-yolov8n" in proc.stderr
    assert "Traceback" not in proc.stderr
