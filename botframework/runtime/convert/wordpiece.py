"""WordPiece: BERT's tokenizer (BertNormalizer, BertPreTokenizer, WordPiece, [CLS] A [SEP]).

    text ─► normalize: drop NUL/U+FFFD/control chars, whitespace → " ", spaces around CJK
            ideographs, NFD and no non-spacing marks (strip accents), lowercase
         ─► split at whitespace; each punctuation character is a word of its own
         ─► each word: longest vocabulary match first, "##" before a piece inside a word;
            a word with a piece that matches nothing (or over 100 characters) is [UNK]
         ─► [CLS] ids [SEP]

What Hugging Face's `tokenizers` does for `BertTokenizerFast` with do_lower_case (and
strip_accents left unset, which follows lowercase), written out in plain Python so that the
converter needs no tokenizer library: the converter runs it on llama.cpp's probe text to
name the pre-tokenizer (tokenizer.ggml.pre) as llama.cpp's own converter does, and the
embedding tests use it as a tokenisation independent of llama.cpp's.
"""

from __future__ import annotations

import json
import string
import unicodedata
from collections.abc import Mapping
from pathlib import Path

MAX_CHARS_PER_WORD = 100  # tokenizers' WordPiece default: a longer word is [UNK]
CONTINUATION = "##"

# CJK ideograph blocks that BERT surrounds with spaces: tokenizers' is_chinese_char, whose
# 0x2B920 (not the Unicode block's 0x2B820) llama.cpp copies too
_CJK_RANGES = ((0x4E00, 0x9FFF), (0x3400, 0x4DBF), (0x20000, 0x2A6DF), (0x2A700, 0x2B73F),
               (0x2B740, 0x2B81F), (0x2B920, 0x2CEAF), (0xF900, 0xFAFF), (0x2F800, 0x2FA1F))


def _is_cjk(code: int) -> bool:
    return any(lo <= code <= hi for lo, hi in _CJK_RANGES)


def _is_control(ch: str) -> bool:
    # tab, newline and carriage return count as whitespace, not control
    return ch not in "\t\n\r" and unicodedata.category(ch).startswith("C")


def _is_punctuation(ch: str) -> bool:
    # ASCII symbols such as $ + < = > ^ ` | ~ are not Unicode punctuation, but BERT splits them
    return ch in string.punctuation or unicodedata.category(ch).startswith("P")


class WordPiece:
    """A WordPiece tokenizer over a vocabulary (token text -> id)."""

    def __init__(self, vocab: Mapping[str, int], *, lowercase: bool = True, strip_accents: bool | None = None,
                 unk_token: str = "[UNK]", cls_token: str = "[CLS]", sep_token: str = "[SEP]") -> None:
        self.vocab = dict(vocab)
        self.lowercase = lowercase
        # tokenizers: strip_accents unset follows lowercase
        self.strip_accents = lowercase if strip_accents is None else strip_accents
        self.unk_id = self.vocab[unk_token]
        self.cls_id = self.vocab[cls_token]
        self.sep_id = self.vocab[sep_token]

    @classmethod
    def from_model_dir(cls, model_dir: Path) -> WordPiece:
        """Read tokenizer.json (a WordPiece model with a BertNormalizer), else vocab.txt with
        tokenizer_config.json's do_lower_case."""
        tokenizer_json = model_dir / "tokenizer.json"
        if tokenizer_json.is_file():
            spec = json.loads(tokenizer_json.read_text(encoding="utf-8"))
            model = spec.get("model") or {}
            if model.get("type") != "WordPiece":
                raise ValueError(f"{tokenizer_json} is not a WordPiece tokenizer (model type {model.get('type')!r})")
            normalizer = spec.get("normalizer") or {}
            if normalizer.get("type") != "BertNormalizer":
                raise ValueError(f"{tokenizer_json}: expected a BertNormalizer, got {normalizer.get('type')!r}")
            return cls(model["vocab"], lowercase=bool(normalizer.get("lowercase", True)),
                       strip_accents=normalizer.get("strip_accents"), unk_token=model.get("unk_token", "[UNK]"))
        lines = (model_dir / "vocab.txt").read_text(encoding="utf-8").splitlines()
        config_path = model_dir / "tokenizer_config.json"
        config = json.loads(config_path.read_text(encoding="utf-8")) if config_path.is_file() else {}
        return cls({token: i for i, token in enumerate(lines)}, lowercase=bool(config.get("do_lower_case", True)),
                   strip_accents=config.get("strip_accents"))

    def normalize(self, text: str) -> str:
        out: list[str] = []
        for ch in text:
            code = ord(ch)
            if code == 0 or code == 0xFFFD or _is_control(ch):
                continue
            if ch.isspace():
                out.append(" ")
            elif _is_cjk(code):
                out.append(f" {ch} ")
            else:
                out.append(ch)
        normalized = "".join(out)
        if self.strip_accents:
            normalized = "".join(ch for ch in unicodedata.normalize("NFD", normalized)
                                 if unicodedata.category(ch) != "Mn")
        return normalized.lower() if self.lowercase else normalized

    @staticmethod
    def pre_tokenize(text: str) -> list[str]:
        words: list[str] = []
        current: list[str] = []
        for ch in text:
            if ch.isspace() or _is_punctuation(ch):
                if current:
                    words.append("".join(current))
                    current = []
                if not ch.isspace():
                    words.append(ch)
            else:
                current.append(ch)
        if current:
            words.append("".join(current))
        return words

    def word_ids(self, word: str) -> list[int]:
        if len(word) > MAX_CHARS_PER_WORD:
            return [self.unk_id]
        ids: list[int] = []
        start = 0
        while start < len(word):
            for end in range(len(word), start, -1):
                piece = word[start:end] if start == 0 else CONTINUATION + word[start:end]
                token_id = self.vocab.get(piece)
                if token_id is not None:
                    ids.append(token_id)
                    start = end
                    break
            else:  # no piece of the rest matches: the whole word is unknown
                return [self.unk_id]
        return ids

    def encode(self, text: str, *, add_special: bool = True) -> list[int]:
        ids = [t for word in self.pre_tokenize(self.normalize(text)) for t in self.word_ids(word)]
        return [self.cls_id, *ids, self.sep_id] if add_special else ids
