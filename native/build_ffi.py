"""Generate the C source of the cffi extension module (API mode).

CMake runs this at build time and compiles its output against llama.h and bf_shim.h:

    bf_cdef.h (declarations)  --cffi-->  _bf_ffi.c  --cc + llama/ggml/shim-->  _bf_ffi.*.so

Function calls through the module release the GIL (cffi's default), so llama_decode runs
while other Python threads (the HTTP server) keep going.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import cffi

MODULE = "botframework.native._bf_ffi"


def make_ffi(cdef_path: Path) -> cffi.FFI:
    ffi = cffi.FFI()
    ffi.cdef(cdef_path.read_text())
    ffi.set_source(MODULE, '#include "llama.h"\n#include "bf_shim.h"\n')
    return ffi


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--cdef", type=Path, required=True)
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args()
    ffi = make_ffi(args.cdef)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    tmp = args.out.with_suffix(".tmp.c")
    ffi.emit_c_code(str(tmp))
    # Only touch the output when it changed, so an unchanged cdef does not recompile.
    if not args.out.exists() or args.out.read_bytes() != tmp.read_bytes():
        tmp.replace(args.out)
    else:
        tmp.unlink()


if __name__ == "__main__":
    main()
