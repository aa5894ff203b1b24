"""BERT checkpoint (Hugging Face / sentence-transformers folder) -> GGUF, on numpy and `gguf`.

    model_dir/config.json              hparams ─┐
    model_dir/model.safetensors        tensors ─┼─► gguf.GGUFWriter ─► out.gguf
    model_dir/tokenizer.json|vocab.txt vocab   ─┤     (arch "bert": what llama.cpp loads)
    model_dir/modules.json + */config.json      ┘     pooling type from the Pooling module

A port of llama.cpp's own converter for this one architecture (class BertModel and its
TextModel/ModelBase bases in vendor/llama.cpp/conversion/, at the pinned commit), without
torch or transformers: same tensor filter and names (gguf's TensorNameMap), same tensor
types (`outtype` for 2-D weights, F32 for norms, biases, positions and token types), same
hparams keys, the WordPiece vocabulary in llama.cpp's "phantom space" form, the special
tokens through gguf.SpecialVocab, tokenizer.ggml.pre named by hashing the tokenisation of
llama.cpp's probe text, causal attention off and the sentence-transformers pooling mode.
Where upstream calls transformers' AutoTokenizer, this reads tokenizer.json (or vocab.txt)
directly and tokenises with wordpiece.WordPiece.
"""

from __future__ import annotations

import hashlib
import json
import logging
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import gguf
import numpy as np

from botframework.runtime.convert.safetensors import read_safetensors
from botframework.runtime.convert.wordpiece import WordPiece

ARCHITECTURES = frozenset({"BertModel", "BertForMaskedLM"})  # the embedding model, with or without its MLM head
OUTTYPES = ("f16", "f32")  # llama.cpp's converter picks f16 for a float32 checkpoint ("auto")

# llama.cpp's probe text for naming pre-tokenizers (get_vocab_base_pre in conversion/base.py):
# the sha256 of str(token ids) of this text, with [CLS]/[SEP], identifies the tokenizer.
_CHKTXT = (
    "\n \n\n \n\n\n \t \t\t \t\n  \n   \n    \n     \n🚀 (normal) 😶\u200d🌫️ (multiple emojis concatenated) ✅ "
    "🦙🦙 3 33 333 3333 33333 333333 3333333 33333333 3.3 3..3 3...3 កាន់តែពិសេសអាច😁 ?我想在apple工作1314151天～ "
    "------======= нещо на Български ''''''```````\"\"\"\"......!!!!!!?????? I've been 'told he's there, 'RE you "
    "sure? 'M not sure I'll make it, 'D you like some tea? We'Ve a'lL"
)
# llama.cpp's table for WordPiece vocabularies. Upstream tests the hashes one `if` after
# another, so the last name listed for a hash wins: bert-base-uncased's vocabulary (bge-small,
# all-MiniLM, jina-v2-en) hashes to 0876d13b..., listed for "bert-bge" and then "jina-v2-en".
# llama.cpp reads no pre-tokenizer for a WPM vocabulary; the name is metadata.
_KNOWN_PRE = {
    "0876d13b50744004aa9aeae05e7b0647eac9d801b5ba4668afc01e709c15e19f": "jina-v2-en",
}
_PHANTOM_SPACE = "\u2581"


def convert_bert(model_dir: Path, out_path: Path, *, outtype: str = "f16", model_name: str | None = None,
                 progress: bool = False) -> None:
    """Write `model_dir`'s BERT checkpoint to `out_path` as a GGUF file llama.cpp loads.

    Raises ValueError for a checkpoint this converter does not handle (another
    architecture, a tensor it cannot name, an unknown tokenizer), before writing anything.
    """
    if outtype not in OUTTYPES:
        raise ValueError(f"outtype must be one of {OUTTYPES}")
    hparams = json.loads((model_dir / "config.json").read_text(encoding="utf-8"))
    architectures = hparams.get("architectures") or []
    if not ARCHITECTURES.intersection(architectures):
        raise ValueError(f"{model_dir}: not a BERT embedding model (architectures {architectures}); "
                         f"this converter handles {sorted(ARCHITECTURES)}")
    ftype = gguf.LlamaFileType.MOSTLY_F16 if outtype == "f16" else gguf.LlamaFileType.ALL_F32
    block_count = int(hparams["num_hidden_layers"])
    writer = gguf.GGUFWriter(path=None, arch=gguf.MODEL_ARCH_NAMES[gguf.MODEL_ARCH.BERT])
    tensor_map = gguf.get_tensor_name_map(gguf.MODEL_ARCH.BERT, block_count)

    # prepare_tensors: every tensor named and typed before the header is written
    for name, data in _tensors(model_dir / "model.safetensors"):
        new_name = tensor_map.get_name(key=name, try_suffixes=(".weight", ".bias"))
        if new_name is None:
            raise ValueError(f"{model_dir}: cannot map tensor {name!r} to a llama.cpp BERT tensor")
        qtype = _tensor_type(new_name, data.ndim, ftype)
        if data.dtype not in (np.float16, np.float32):  # upstream: unsupported dtypes become float32
            data = data.astype(np.float32)
        writer.add_tensor(new_name, gguf.quants.quantize(np.ascontiguousarray(data), qtype), raw_dtype=qtype)

    # prepare_metadata: general.*, then hparams, then the vocabulary
    total_params, shared_params, expert_params, expert_count = writer.get_total_parameter_count()
    metadata = gguf.Metadata.load(None, model_dir, model_name, total_params)
    if metadata.name is None:
        metadata.name = model_dir.name
    if metadata.size_label is None and total_params > 0:
        metadata.size_label = gguf.size_label(total_params, shared_params, expert_params, expert_count)
    writer.add_type(gguf.GGUFType.MODEL)
    metadata.set_gguf_meta_model(writer)
    _set_parameters(writer, hparams, model_dir, block_count, ftype)
    writer.add_quantization_version(gguf.GGML_QUANT_VERSION)
    _set_vocab(writer, hparams, model_dir)

    writer.write_header_to_file(path=out_path)
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file(progress=progress)
    writer.close()


def _tensors(path: Path) -> Iterator[tuple[str, np.ndarray]]:
    """The checkpoint's tensors under the names upstream maps, without those it drops."""
    for name, data in read_safetensors(path).items():
        name = name.removeprefix("bert.")
        if name.endswith(".gamma"):
            name = name[: -len(".gamma")] + ".weight"
        if name.endswith(".beta"):
            name = name[: -len(".beta")] + ".bias"
        # embeddings only: no pooler, no MLM / next-sentence heads, no position id buffer
        if name in ("embeddings.position_ids", "pooler.dense.weight", "pooler.dense.bias"):
            continue
        if name.startswith(("cls.predictions", "cls.seq_relationship")):
            continue
        if name.endswith((".attention.masked_bias", ".attention.bias", ".rotary_emb.inv_freq")):
            continue
        yield name, data


def _tensor_type(new_name: str, n_dims: int, ftype: gguf.LlamaFileType) -> gguf.GGMLQuantizationType:
    """llama.cpp's choice: F32 for 1-D tensors, norms, biases, position and token-type
    embeddings (most kernels take only F32 there); the file type for the other weights."""
    qtype = gguf.GGMLQuantizationType
    keep_f32 = (gguf.MODEL_TENSOR.POS_EMBD, gguf.MODEL_TENSOR.TOKEN_TYPES)
    if n_dims <= 1 or new_name.endswith("_norm.weight") or not new_name.endswith(".weight"):
        return qtype.F32
    if any(new_name == gguf.TENSOR_NAMES[key] + ".weight" for key in keep_f32):
        return qtype.F32
    return qtype.F16 if ftype == gguf.LlamaFileType.MOSTLY_F16 else qtype.F32


def _set_parameters(writer: gguf.GGUFWriter, hparams: dict[str, Any], model_dir: Path, block_count: int,
                    ftype: gguf.LlamaFileType) -> None:
    """TextModel.set_gguf_parameters for the keys a BERT config has, then BertModel's own."""
    writer.add_block_count(block_count)
    setters: list[tuple[tuple[str, ...], Callable[[Any], None]]] = [
        (("max_position_embeddings", "n_ctx", "n_positions", "max_length", "max_sequence_length",
          "model_max_length"), writer.add_context_length),
        (("hidden_size", "n_embd", "dim"), writer.add_embedding_length),
        (("prefix_dense_intermediate_size", "dense_intermediate_size", "intermediate_size", "n_inner",
          "hidden_dim"), writer.add_feed_forward_length),
        (("num_attention_heads", "n_head", "n_heads"), writer.add_head_count),
        (("num_key_value_heads", "n_kv_heads"), writer.add_head_count_kv),
        (("layer_norm_eps", "layer_norm_epsilon", "norm_epsilon"), writer.add_layer_norm_eps),
    ]
    for keys, add in setters:
        value = next((hparams[k] for k in keys if k in hparams), None)
        if value is not None:
            add(value)
    if (head_dim := hparams.get("head_dim")) is not None:
        writer.add_key_length(head_dim)
        writer.add_value_length(head_dim)
    writer.add_file_type(ftype)
    # BertModel: every token attends to every other; pooled as the sentence-transformers model says
    writer.add_causal_attention(False)
    pooling = _pooling_type(model_dir)
    if pooling is not None:
        writer.add_pooling_type(pooling)


def _pooling_type(model_dir: Path) -> gguf.PoolingType | None:
    """The Pooling module's mode from modules.json (TextModel._try_set_pooling_type); None
    when the folder is a plain transformers checkpoint without one."""
    modules_path = model_dir / "modules.json"
    if not modules_path.is_file():
        return None
    modules = json.loads(modules_path.read_text(encoding="utf-8"))
    path = next((m["path"] for m in modules if str(m.get("type", "")).endswith("Pooling")), None)
    if path is None:
        return None
    config = json.loads((model_dir / path / "config.json").read_text(encoding="utf-8"))
    modes = {"mean": gguf.PoolingType.MEAN, "cls": gguf.PoolingType.CLS, "lasttoken": gguf.PoolingType.LAST}
    if config.get("pooling_mode_mean_tokens"):
        return gguf.PoolingType.MEAN
    if config.get("pooling_mode_cls_token"):
        return gguf.PoolingType.CLS
    if config.get("pooling_mode_lasttoken"):
        return gguf.PoolingType.LAST
    if config.get("pooling_mode") in modes:
        return modes[config["pooling_mode"]]
    raise ValueError(f"{model_dir / path}: only mean, cls and last-token pooling are supported")


def _vocab(model_dir: Path) -> tuple[dict[str, int], dict[str, bool]]:
    """(token -> id, added token -> special?) as transformers' tokenizer reports them."""
    tokenizer_json = model_dir / "tokenizer.json"
    if tokenizer_json.is_file():
        spec = json.loads(tokenizer_json.read_text(encoding="utf-8"))
        vocab: dict[str, int] = dict(spec["model"]["vocab"])
        added = {t["content"]: bool(t.get("special")) for t in spec.get("added_tokens", [])}
        for t in spec.get("added_tokens", []):
            vocab[t["content"]] = int(t["id"])
        return vocab, added
    lines = (model_dir / "vocab.txt").read_text(encoding="utf-8").splitlines()
    vocab = {token: i for i, token in enumerate(lines)}
    specials = json.loads((model_dir / "special_tokens_map.json").read_text(encoding="utf-8")) \
        if (model_dir / "special_tokens_map.json").is_file() else {}
    added = {str(v if isinstance(v, str) else v.get("content")): True for v in specials.values()
             if isinstance(v, (str, dict))}
    return vocab, added


def _set_vocab(writer: gguf.GGUFWriter, hparams: dict[str, Any], model_dir: Path) -> None:
    """BertModel.set_vocab over TextModel.get_vocab_base."""
    vocab, added = _vocab(model_dir)
    vocab_size = int(hparams.get("vocab_size", len(vocab)))
    if max(vocab.values()) >= vocab_size:
        raise ValueError(f"{model_dir}: a token id is beyond the model's vocab_size {vocab_size}")
    tokpre = _pre_tokenizer_name(model_dir)
    by_id = {i: token for token, i in vocab.items()}
    tokens: list[str] = []
    toktypes: list[int] = []
    for i in range(vocab_size):
        token = by_id.get(i)
        if token is None:
            tokens.append(f"[PAD{i}]")
            toktypes.append(gguf.TokenType.UNUSED)
        elif token in added and (added[token] or _looks_special(token)):
            tokens.append(token)
            toktypes.append(gguf.TokenType.CONTROL)
        elif token in added:
            tokens.append(token.replace(_PHANTOM_SPACE, " "))  # pre-normalize user-defined spaces
            toktypes.append(gguf.TokenType.USER_DEFINED)
        else:
            tokens.append(token)
            toktypes.append(gguf.TokenType.NORMAL)
    # BERT's token types ("sentence A / B"): llama.cpp checks the tensor against this count
    writer.add_token_type_count(hparams.get("type_vocab_size", 1))
    # llama.cpp's WPM vocabulary: a word's first piece carries U+2581, a "##" piece drops the ##
    phantom = [t if kind == gguf.TokenType.CONTROL else t[2:] if t.startswith("##") else _PHANTOM_SPACE + t
               for t, kind in zip(tokens, toktypes, strict=True)]
    writer.add_tokenizer_model("bert")
    writer.add_tokenizer_pre(tokpre)
    writer.add_token_list(phantom)
    writer.add_token_types(toktypes)
    # gguf has no key for a [CLS] id and logs a warning for it on every BERT; llama.cpp takes BOS as CLS
    vocab_log = logging.getLogger("gguf.vocab")
    level = vocab_log.level
    vocab_log.setLevel(logging.ERROR)
    try:
        gguf.SpecialVocab(model_dir, n_vocab=len(phantom)).add_to_gguf(writer, quiet=True)
    finally:
        vocab_log.setLevel(level)
    _add_normalizer(writer, model_dir)


def _looks_special(token: str) -> bool:
    """TextModel.does_token_look_special."""
    return token in ("<pad>", "<mask>", "<2mass>", "[@BOS@]") \
        or (token.startswith("<|") and token.endswith("|>")) \
        or (token.startswith("<｜") and token.endswith("｜>")) \
        or (token.startswith("<unused") and token.endswith(">"))


def _pre_tokenizer_name(model_dir: Path) -> str:
    """tokenizer.ggml.pre as llama.cpp's converter names it: by the hash of the probe text's ids."""
    ids = WordPiece.from_model_dir(model_dir).encode(_CHKTXT)
    chkhsh = hashlib.sha256(str(ids).encode()).hexdigest()
    name = _KNOWN_PRE.get(chkhsh)
    if name is None:
        raise ValueError(f"{model_dir}: WordPiece tokenizer not recognized (chkhsh {chkhsh}); "
                         "llama.cpp's converter would refuse it too")
    return name


def _add_normalizer(writer: gguf.GGUFWriter, model_dir: Path) -> None:
    """tokenizer.ggml.normalizer.* from tokenizer.json's normalizer: llama.cpp's gguf-py
    writes them (SpecialVocab._parse_normalizer), the gguf release on PyPI does not yet."""
    tokenizer_json = model_dir / "tokenizer.json"
    if not tokenizer_json.is_file():
        return
    flags: dict[str, bool | None] = {"lowercase": None, "strip_accents": None}

    def parse(norm: dict[str, Any]) -> None:
        kind = norm.get("type")
        if kind == "Lowercase":
            flags["lowercase"] = True
        elif kind == "StripAccents":
            flags["strip_accents"] = True
        elif kind == "BertNormalizer":
            for key in flags:
                if key in norm:
                    flags[key] = norm[key]
        elif kind == "Sequence":
            for inner in norm.get("normalizers", []):
                parse(inner)

    parse(json.loads(tokenizer_json.read_text(encoding="utf-8")).get("normalizer") or {})
    for key, value in flags.items():
        if value is not None:  # unset: llama.cpp's default (lowercase; strip accents when lowercasing)
            writer.add_bool(f"tokenizer.ggml.normalizer.{key}", bool(value))
