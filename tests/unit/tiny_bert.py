"""A tiny sentence-transformers BERT checkpoint folder, written with numpy, for converter tests.

    write_checkpoint(folder) -> the tensors it wrote (name -> float32 array)
        config.json, model.safetensors, tokenizer.json (WordPiece + BertNormalizer),
        tokenizer_config.json, special_tokens_map.json, modules.json, 1_Pooling/config.json

The layout and file contents follow the real all-MiniLM-L6-v2 folder, at 8 hidden units.
"""

from __future__ import annotations

import json
import struct
from pathlib import Path

import numpy as np

VOCAB = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", "the", "cat", "sat", "on", "mat", "##s", "dog",
         ".", ",", "!", "a", "c", "##at", "##a", "un", "##aff", "##able", "cafe", "大"]
VOCAB_SIZE = len(VOCAB) + 2  # two ids without a token: the converter fills them as unused
HIDDEN, HEADS, LAYERS, FF, POSITIONS = 8, 2, 2, 16, 16


def safetensors_bytes(tensors: dict[str, np.ndarray], metadata: dict[str, str] | None = None) -> bytes:
    """The safetensors encoding: u64 header length, JSON header, then the raw data in order."""
    dtypes = {np.dtype("<f4"): "F32", np.dtype("<f2"): "F16", np.dtype("<i8"): "I64", np.dtype("<i4"): "I32"}
    header: dict[str, object] = {"__metadata__": metadata or {"format": "pt"}}
    blobs: list[bytes] = []
    offset = 0
    for name in sorted(tensors):
        array = np.ascontiguousarray(tensors[name])
        data = array.astype(array.dtype.newbyteorder("<")).tobytes()
        header[name] = {"dtype": dtypes[array.dtype.newbyteorder("<")], "shape": list(array.shape),
                        "data_offsets": [offset, offset + len(data)]}
        blobs.append(data)
        offset += len(data)
    encoded = json.dumps(header).encode()
    encoded += b" " * (-len(encoded) % 8)  # the format pads the header to 8 bytes
    return struct.pack("<Q", len(encoded)) + encoded + b"".join(blobs)


def checkpoint_tensors(seed: int = 0) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)

    def w(*shape: int) -> np.ndarray:
        return (rng.standard_normal(shape) * 0.3).astype(np.float32)

    tensors = {
        "embeddings.word_embeddings.weight": w(VOCAB_SIZE, HIDDEN),
        "embeddings.position_embeddings.weight": w(POSITIONS, HIDDEN),
        "embeddings.token_type_embeddings.weight": w(2, HIDDEN),
        "embeddings.LayerNorm.weight": 1 + w(HIDDEN), "embeddings.LayerNorm.bias": w(HIDDEN),
        "embeddings.position_ids": np.arange(POSITIONS, dtype=np.int64)[None, :],  # dropped by the converter
        "pooler.dense.weight": w(HIDDEN, HIDDEN), "pooler.dense.bias": w(HIDDEN),  # dropped too
    }
    for i in range(LAYERS):
        p = f"encoder.layer.{i}."
        for part in ("query", "key", "value"):
            tensors[f"{p}attention.self.{part}.weight"] = w(HIDDEN, HIDDEN)
            tensors[f"{p}attention.self.{part}.bias"] = w(HIDDEN)
        tensors[f"{p}attention.output.dense.weight"] = w(HIDDEN, HIDDEN)
        tensors[f"{p}attention.output.dense.bias"] = w(HIDDEN)
        tensors[f"{p}attention.output.LayerNorm.weight"] = 1 + w(HIDDEN)
        tensors[f"{p}attention.output.LayerNorm.bias"] = w(HIDDEN)
        tensors[f"{p}intermediate.dense.weight"] = w(FF, HIDDEN)
        tensors[f"{p}intermediate.dense.bias"] = w(FF)
        tensors[f"{p}output.dense.weight"] = w(HIDDEN, FF)
        tensors[f"{p}output.dense.bias"] = w(HIDDEN)
        tensors[f"{p}output.LayerNorm.weight"] = 1 + w(HIDDEN)
        tensors[f"{p}output.LayerNorm.bias"] = w(HIDDEN)
    return tensors


def write_checkpoint(folder: Path, *, seed: int = 0, architectures: tuple[str, ...] = ("BertModel",),
                     extra_tensors: dict[str, np.ndarray] | None = None) -> dict[str, np.ndarray]:
    folder.mkdir(parents=True, exist_ok=True)
    tensors = {**checkpoint_tensors(seed), **(extra_tensors or {})}
    (folder / "model.safetensors").write_bytes(safetensors_bytes(tensors))
    config = {"architectures": list(architectures), "model_type": "bert", "hidden_size": HIDDEN,
              "num_attention_heads": HEADS, "num_hidden_layers": LAYERS, "intermediate_size": FF,
              "max_position_embeddings": POSITIONS, "type_vocab_size": 2, "vocab_size": VOCAB_SIZE,
              "layer_norm_eps": 1e-12, "hidden_act": "gelu", "pad_token_id": 0}
    (folder / "config.json").write_text(json.dumps(config))
    specials = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
    tokenizer = {
        "version": "1.0",
        "added_tokens": [{"id": VOCAB.index(t), "content": t, "special": True, "normalized": False}
                         for t in specials],
        "normalizer": {"type": "BertNormalizer", "clean_text": True, "handle_chinese_chars": True,
                       "strip_accents": None, "lowercase": True},
        "pre_tokenizer": {"type": "BertPreTokenizer"},
        "post_processor": {
            "type": "TemplateProcessing",
            "single": [{"SpecialToken": {"id": "[CLS]", "type_id": 0}}, {"Sequence": {"id": "A", "type_id": 0}},
                       {"SpecialToken": {"id": "[SEP]", "type_id": 0}}],
            "pair": [{"SpecialToken": {"id": "[CLS]", "type_id": 0}}, {"Sequence": {"id": "A", "type_id": 0}},
                     {"SpecialToken": {"id": "[SEP]", "type_id": 0}}, {"Sequence": {"id": "B", "type_id": 1}},
                     {"SpecialToken": {"id": "[SEP]", "type_id": 1}}],
            "special_tokens": {}},
        "model": {"type": "WordPiece", "unk_token": "[UNK]", "continuing_subword_prefix": "##",
                  "max_input_chars_per_word": 100, "vocab": {t: i for i, t in enumerate(VOCAB)}},
    }
    (folder / "tokenizer.json").write_text(json.dumps(tokenizer, ensure_ascii=False), encoding="utf-8")
    (folder / "tokenizer_config.json").write_text(json.dumps(
        {"do_lower_case": True, "unk_token": "[UNK]", "sep_token": "[SEP]", "pad_token": "[PAD]",
         "cls_token": "[CLS]", "mask_token": "[MASK]", "tokenizer_class": "BertTokenizer"}))
    (folder / "special_tokens_map.json").write_text(json.dumps(
        {"unk_token": "[UNK]", "sep_token": "[SEP]", "pad_token": "[PAD]", "cls_token": "[CLS]",
         "mask_token": "[MASK]"}))
    (folder / "vocab.txt").write_text("\n".join(VOCAB) + "\n", encoding="utf-8")
    (folder / "modules.json").write_text(json.dumps(
        [{"idx": 0, "name": "0", "path": "", "type": "sentence_transformers.models.Transformer"},
         {"idx": 1, "name": "1", "path": "1_Pooling", "type": "sentence_transformers.models.Pooling"},
         {"idx": 2, "name": "2", "path": "2_Normalize", "type": "sentence_transformers.models.Normalize"}]))
    (folder / "1_Pooling").mkdir(exist_ok=True)
    (folder / "1_Pooling" / "config.json").write_text(json.dumps(
        {"word_embedding_dimension": HIDDEN, "pooling_mode_cls_token": False, "pooling_mode_mean_tokens": True}))
    return tensors
