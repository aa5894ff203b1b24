"""Fetch the pinned llama.cpp source tree into vendor/llama.cpp.

Called by CMakeLists.txt at configure time when vendor/llama.cpp is empty:

    pip download llama-cpp-python==0.3.36 (sdist)  ->  sha256 check  ->  extract only
    llama_cpp_python-0.3.36/vendor/llama.cpp/**    ->  vendor/llama.cpp/

The sdist is cached (~/.cache/botframework/sdist, or $BOTFRAMEWORK_CACHE/sdist) so a
clean clone does not download 77 MB again. The tree is never edited after extraction.
"""

from __future__ import annotations

import argparse
import hashlib
import os
import shutil
import subprocess
import sys
import tarfile
import tempfile
from pathlib import Path

PACKAGE = "llama-cpp-python"
VERSION = "0.3.36"
SDIST_NAME = f"llama_cpp_python-{VERSION}.tar.gz"
SDIST_SHA256 = "832db0699007f1be95a7e41ef12e88926b02ba836461e36a36372db2760c1a2e"
LLAMA_CPP_COMMIT = "0c1e57098bba43ac29e6e3b677cdceebdd22334f"
SUBTREE = f"llama_cpp_python-{VERSION}/vendor/llama.cpp/"


def cache_dir() -> Path:
    root = os.environ.get("BOTFRAMEWORK_CACHE") or os.path.join(
        os.environ.get("XDG_CACHE_HOME") or os.path.expanduser("~/.cache"), "botframework"
    )
    return Path(root) / "sdist"


def sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def download_sdist() -> Path:
    target = cache_dir()
    target.mkdir(parents=True, exist_ok=True)
    sdist = target / SDIST_NAME
    if sdist.exists() and sha256_of(sdist) == SDIST_SHA256:
        return sdist
    with tempfile.TemporaryDirectory(dir=target) as tmp:
        cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--no-binary", ":all:",
               "--disable-pip-version-check", "-d", tmp, f"{PACKAGE}=={VERSION}"]
        print("fetch_llama:", " ".join(cmd), flush=True)
        subprocess.run(cmd, check=True)
        fetched = Path(tmp) / SDIST_NAME
        actual = sha256_of(fetched)
        if actual != SDIST_SHA256:
            raise SystemExit(f"fetch_llama: sha256 mismatch for {SDIST_NAME}: "
                             f"expected {SDIST_SHA256}, got {actual}")
        os.replace(fetched, sdist)
    return sdist


def extract(sdist: Path, dest: Path) -> None:
    if sha256_of(sdist) != SDIST_SHA256:
        raise SystemExit(f"fetch_llama: {sdist} does not match the pinned sha256")
    staging = Path(tempfile.mkdtemp(prefix=".llama.cpp-", dir=dest.parent))
    try:
        with tarfile.open(sdist, "r:gz") as archive:
            members = []
            for member in archive.getmembers():
                if not member.name.startswith(SUBTREE):
                    continue
                member.name = member.name[len(SUBTREE):]
                if member.name:
                    members.append(member)
            archive.extractall(staging, members=members, filter="data")
        (staging / ".botframework-pin").write_text(
            f"{PACKAGE}=={VERSION}\nsdist_sha256={SDIST_SHA256}\nllama.cpp={LLAMA_CPP_COMMIT}\n")
        if dest.exists():
            shutil.rmtree(dest)
        os.replace(staging, dest)
    finally:
        if staging.exists():
            shutil.rmtree(staging)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("dest", type=Path, help="vendor/llama.cpp directory to fill")
    args = parser.parse_args()
    dest: Path = args.dest.resolve()
    if (dest / "CMakeLists.txt").exists():
        print(f"fetch_llama: {dest} already present")
        return
    dest.parent.mkdir(parents=True, exist_ok=True)
    extract(download_sdist(), dest)
    print(f"fetch_llama: extracted llama.cpp {LLAMA_CPP_COMMIT[:12]} into {dest}")


if __name__ == "__main__":
    main()
