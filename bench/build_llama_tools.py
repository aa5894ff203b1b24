"""Build llama.cpp's own tools (llama-bench, llama-simple, ...) from our vendored tree.

    botframework.native._build_info.BUILD_DIR  (the CMake tree that built our module)
        -> cmake --build BUILD_DIR --target T1 T2 ... -j N
        -> {target: BUILD_DIR/bin/target}

The tools are configured in the same CMake tree as our cffi module but excluded from the
default build, so they link the same static libggml/libllama with the same flags (GGML_NATIVE,
Release). That is what makes them a fair reference: a speed or output difference is ours,
not a different build. Used by bench/ and tests/native/.

    python bench/build_llama_tools.py llama-bench llama-simple
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
from pathlib import Path

DEFAULT_TARGETS = ("llama-bench", "llama-simple")
REPO_ROOT = Path(__file__).resolve().parents[1]


class ToolBuildError(RuntimeError):
    """The tools could not be built (no build tree, no cmake, or the build failed)."""


def build_dir() -> Path:
    """The CMake build tree recorded when our native module was built."""
    if str(REPO_ROOT) not in sys.path:  # run as a script from a checkout without PYTHONPATH
        sys.path.append(str(REPO_ROOT))
    try:
        from botframework.native._build_info import BUILD_DIR
    except ImportError as exc:
        raise ToolBuildError(
            "botframework.native._build_info is missing: build the native module first "
            f"(it records the CMake build dir) [{exc}]") from exc
    path = Path(BUILD_DIR)
    if not (path / "CMakeCache.txt").is_file():
        raise ToolBuildError(
            f"CMake build dir {path} does not exist or is not configured (no CMakeCache.txt); "
            "rebuild the native module so the tree is recreated")
    return path


def tool_path(target: str, directory: Path | None = None) -> Path:
    return (directory or build_dir()) / "bin" / target


def build_tools(targets: tuple[str, ...] | list[str] = DEFAULT_TARGETS, *, jobs: int | None = None,
                quiet: bool = True) -> dict[str, Path]:
    """Build `targets` in the recorded build tree; return {target: path to its binary}.

    Incremental: an up-to-date target costs one cmake/ninja no-op (about a second).
    """
    if not targets:
        raise ValueError("no targets to build")
    directory = build_dir()
    cmake = shutil.which("cmake")
    if cmake is None:
        raise ToolBuildError("cmake is not on PATH")
    jobs = jobs or os.cpu_count() or 1
    cmd = [cmake, "--build", str(directory), "--target", *targets, "-j", str(jobs)]
    proc = subprocess.run(cmd, stdout=subprocess.PIPE if quiet else None,
                          stderr=subprocess.STDOUT if quiet else None, text=True, check=False)
    if proc.returncode != 0:
        tail = (proc.stdout or "")[-4000:]
        raise ToolBuildError(f"`{' '.join(cmd)}` failed with exit code {proc.returncode}\n{tail}")
    paths = {target: tool_path(target, directory) for target in targets}
    missing = [str(p) for p in paths.values() if not os.access(p, os.X_OK)]
    if missing:
        raise ToolBuildError(f"build succeeded but these binaries are missing: {', '.join(missing)}")
    return paths


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("targets", nargs="*", default=list(DEFAULT_TARGETS),
                        help=f"CMake targets (default: {' '.join(DEFAULT_TARGETS)})")
    parser.add_argument("-j", "--jobs", type=int, default=None, help="parallel jobs (default: all cores)")
    parser.add_argument("-v", "--verbose", action="store_true", help="show the build output")
    args = parser.parse_args(argv)
    try:
        paths = build_tools(args.targets, jobs=args.jobs, quiet=not args.verbose)
    except ToolBuildError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    for path in paths.values():
        print(path)
    return 0


if __name__ == "__main__":
    sys.exit(main())
