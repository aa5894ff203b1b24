"""The BERT converter (botframework.runtime.convert) on a tiny checkpoint written by the test.

No network and no compiled module: the GGUF is read back with gguf's own reader. The real
model through llama.cpp is tests/native/test_embedding_model.py.
"""

from __future__ import annotations

import hashlib
import json
import re
import struct
from pathlib import Path

import numpy as np
import pytest

gguf = pytest.importorskip("gguf")

from tiny_bert import HIDDEN, LAYERS, VOCAB, VOCAB_SIZE, safetensors_bytes, write_checkpoint

from botframework.runtime.convert import bert
from botframework.runtime.convert.safetensors import read_safetensors
from botframework.runtime.convert.wordpiece import WordPiece

VENDOR_BASE = Path(__file__).resolve().parents[2] / "vendor" / "llama.cpp" / "conversion" / "base.py"


@pytest.fixture
def checkpoint(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> tuple[Path, dict[str, np.ndarray]]:
    """A tiny checkpoint folder, its vocabulary's probe hash made known to the converter."""
    folder = tmp_path / "tiny"
    tensors = write_checkpoint(folder)
    ids = WordPiece.from_model_dir(folder).encode(bert._CHKTXT)
    monkeypatch.setitem(bert._KNOWN_PRE, hashlib.sha256(str(ids).encode()).hexdigest(), "tiny-wpm")
    return folder, tensors


def fields(path: Path) -> dict[str, object]:
    reader = gguf.GGUFReader(path)
    return {k: f.contents() for k, f in reader.fields.items() if not k.startswith("GGUF.")}


# --- safetensors ----------------------------------------------------------------------------

def test_safetensors_round_trip(tmp_path: Path) -> None:
    arrays = {"b": np.arange(6, dtype=np.float32).reshape(2, 3), "a": np.array([1.5, -2], dtype=np.float16),
              "i": np.arange(4, dtype=np.int64), "empty": np.zeros((0, 3), dtype=np.float32)}
    path = tmp_path / "x.safetensors"
    path.write_bytes(safetensors_bytes(arrays))
    read = read_safetensors(path)
    assert list(read) == ["a", "b", "empty", "i"]  # name order, as the safetensors library lists them
    for name, array in arrays.items():
        assert read[name].dtype == array.dtype and read[name].shape == array.shape
        np.testing.assert_array_equal(read[name], array)


def test_safetensors_bf16_is_widened(tmp_path: Path) -> None:
    values = np.array([1.0, -2.5, 3.140625], dtype=np.float32)  # exact in bf16
    raw = (values.view(np.uint32) >> 16).astype("<u2").tobytes()
    header = json.dumps({"w": {"dtype": "BF16", "shape": [3], "data_offsets": [0, 6]}}).encode()
    path = tmp_path / "bf16.safetensors"
    path.write_bytes(struct.pack("<Q", len(header)) + header + raw)
    np.testing.assert_array_equal(read_safetensors(path)["w"], values)


@pytest.mark.parametrize("damage", ["short", "huge_header", "not_json", "outside", "wrong_size", "dtype"])
def test_safetensors_damage_is_a_value_error(tmp_path: Path, damage: str) -> None:
    good = safetensors_bytes({"w": np.ones(4, dtype=np.float32)})
    (header_len,) = struct.unpack("<Q", good[:8])
    header = json.loads(good[8:8 + header_len])
    if damage == "short":
        data = good[:5]
    elif damage == "huge_header":
        data = struct.pack("<Q", 1 << 40) + good[8:]
    elif damage == "not_json":
        data = good[:8] + b"{" * header_len + good[8 + header_len:]
    else:
        if damage == "outside":
            header["w"]["data_offsets"] = [0, 1 << 20]
        elif damage == "wrong_size":
            header["w"]["shape"] = [5]
        else:
            header["w"]["dtype"] = "F8_E4M3"
        encoded = json.dumps(header).encode()
        data = struct.pack("<Q", len(encoded)) + encoded + good[8 + header_len:]
    path = tmp_path / "bad.safetensors"
    path.write_bytes(data)
    with pytest.raises(ValueError):
        read_safetensors(path)


# --- WordPiece ------------------------------------------------------------------------------

@pytest.fixture
def wordpiece(tmp_path: Path) -> WordPiece:
    write_checkpoint(tmp_path / "tiny")
    return WordPiece.from_model_dir(tmp_path / "tiny")


@pytest.mark.parametrize(("text", "pieces"), [
    ("The cat sat on the mat.", ["the", "cat", "sat", "on", "the", "mat", "."]),
    ("the cats, the dogs!", ["the", "cat", "##s", ",", "the", "dog", "##s", "!"]),
    ("unaffable", ["un", "##aff", "##able"]),           # longest match first, then ## pieces
    ("Café", ["cafe"]),                                 # lowercased, accent stripped (NFD, no Mn)
    ("a\u200bcat\x00", ["[UNK]"]),                      # U+200B is a format char: dropped, so "acat" (no match)
    ("cat\tdog\u3000mat", ["cat", "dog", "mat"]),        # tab and ideographic space split words
    ("a大cat", ["a", "大", "cat"]),                      # CJK ideographs are words of their own
    ("zebra cat", ["[UNK]", "cat"]),                    # one unmatched piece makes the word [UNK]
    ("c" + "a" * 120, ["[UNK]"]),                       # over 100 characters: [UNK] whole
])
def test_wordpiece(wordpiece: WordPiece, text: str, pieces: list[str]) -> None:
    ids = wordpiece.encode(text)
    assert [VOCAB[i] for i in ids] == ["[CLS]", *pieces, "[SEP]"]


def test_wordpiece_from_vocab_txt_matches_tokenizer_json(tmp_path: Path) -> None:
    write_checkpoint(tmp_path / "tiny")
    from_json = WordPiece.from_model_dir(tmp_path / "tiny")
    (tmp_path / "tiny" / "tokenizer.json").unlink()
    from_txt = WordPiece.from_model_dir(tmp_path / "tiny")
    text = "The cats sat on un-affable Café mats!"
    assert from_txt.encode(text) == from_json.encode(text)


@pytest.mark.skipif(not VENDOR_BASE.is_file(), reason="needs the vendored llama.cpp tree")
def test_probe_text_and_known_hash_are_llama_cpps() -> None:
    source = VENDOR_BASE.read_text(encoding="utf-8")
    match = re.search(r"chktxt = (.*)\n", source)
    assert match is not None
    assert bert._CHKTXT == eval(match.group(1))  # noqa: S307 - a string literal from our vendored tree
    # upstream tests the hashes in turn with plain `if`s: the last name for a hash is the one written
    table: dict[str, str] = {}
    for chkhsh, name in re.findall(r'if chkhsh == "([0-9a-f]{64})":\n(?:\s*#.*\n)*\s*res = "([^"]+)"', source):
        table[chkhsh] = name
    for chkhsh, name in bert._KNOWN_PRE.items():
        assert table[chkhsh] == name


# --- the converter --------------------------------------------------------------------------

def test_convert_writes_llama_cpps_bert_layout(checkpoint: tuple[Path, dict[str, np.ndarray]],
                                               tmp_path: Path) -> None:
    folder, tensors = checkpoint
    out = tmp_path / "tiny.gguf"
    bert.convert_bert(folder, out, model_name="tiny-bert")
    kv = fields(out)
    assert kv["general.architecture"] == "bert" and kv["general.type"] == "model"
    assert kv["general.name"] == "tiny-bert"
    assert kv["bert.block_count"] == LAYERS and kv["bert.context_length"] == 16
    assert kv["bert.embedding_length"] == HIDDEN and kv["bert.feed_forward_length"] == 16
    assert kv["bert.attention.head_count"] == 2 and "bert.attention.head_count_kv" not in kv
    assert kv["bert.attention.layer_norm_epsilon"] == pytest.approx(1e-12)
    assert kv["bert.attention.causal"] is False
    assert kv["bert.pooling_type"] == int(gguf.PoolingType.MEAN)
    assert kv["general.file_type"] == int(gguf.LlamaFileType.MOSTLY_F16)
    assert kv["tokenizer.ggml.model"] == "bert" and kv["tokenizer.ggml.pre"] == "tiny-wpm"
    assert kv["tokenizer.ggml.token_type_count"] == 2
    tokens = kv["tokenizer.ggml.tokens"]
    assert isinstance(tokens, list) and len(tokens) == VOCAB_SIZE
    # phantom space: a word-initial piece gets U+2581, a ## piece loses its ##, control tokens stay
    assert tokens[:4] == ["[PAD]", "[UNK]", "[CLS]", "[SEP]"]
    assert tokens[VOCAB.index("cat")] == "\u2581cat" and tokens[VOCAB.index("##s")] == "s"
    # ids without a token are filled as upstream fills them (and get the phantom space too)
    assert tokens[-2:] == [f"\u2581[PAD{VOCAB_SIZE - 2}]", f"\u2581[PAD{VOCAB_SIZE - 1}]"]
    types = kv["tokenizer.ggml.token_type"]
    assert isinstance(types, list)
    assert types[:5] == [int(gguf.TokenType.CONTROL)] * 5 and types[5] == int(gguf.TokenType.NORMAL)
    assert types[-1] == int(gguf.TokenType.UNUSED)
    assert kv["tokenizer.ggml.bos_token_id"] == VOCAB.index("[CLS]")
    assert kv["tokenizer.ggml.eos_token_id"] == VOCAB.index("[SEP]")
    assert kv["tokenizer.ggml.seperator_token_id"] == VOCAB.index("[SEP]")
    assert kv["tokenizer.ggml.unknown_token_id"] == VOCAB.index("[UNK]")
    assert kv["tokenizer.ggml.padding_token_id"] == 0
    assert kv["tokenizer.ggml.add_bos_token"] is True and kv["tokenizer.ggml.add_eos_token"] is True
    assert kv["tokenizer.ggml.normalizer.lowercase"] is True

    written = {t.name: t for t in gguf.GGUFReader(out).tensors}
    expected = {"token_embd.weight", "position_embd.weight", "token_types.weight", "token_embd_norm.weight",
                "token_embd_norm.bias"}
    for i in range(LAYERS):
        expected |= {f"blk.{i}.{part}.{kind}" for kind in ("weight", "bias")
                     for part in ("attn_q", "attn_k", "attn_v", "attn_output", "attn_output_norm", "ffn_up",
                                  "ffn_down", "layer_output_norm")}
    assert set(written) == expected  # no pooler, no position_ids
    f16, f32 = gguf.GGMLQuantizationType.F16, gguf.GGMLQuantizationType.F32
    assert written["token_embd.weight"].tensor_type == f16
    assert written["blk.0.attn_q.weight"].tensor_type == f16
    for name in ("position_embd.weight", "token_types.weight", "blk.0.attn_q.bias", "blk.1.ffn_down.bias",
                 "blk.0.attn_output_norm.weight", "token_embd_norm.weight"):
        assert written[name].tensor_type == f32, name
    # values: the checkpoint's, in the file's type (ggml's shape order is reversed: data is row-major)
    np.testing.assert_array_equal(
        np.asarray(written["blk.1.ffn_up.weight"].data),
        tensors["encoder.layer.1.intermediate.dense.weight"].astype(np.float16))
    np.testing.assert_array_equal(np.asarray(written["position_embd.weight"].data),
                                  tensors["embeddings.position_embeddings.weight"])
    assert list(written["token_embd.weight"].shape) == [HIDDEN, VOCAB_SIZE]


def test_convert_is_deterministic_and_f32_is_exact(checkpoint: tuple[Path, dict[str, np.ndarray]],
                                                   tmp_path: Path) -> None:
    folder, tensors = checkpoint
    first, second, full = tmp_path / "1.gguf", tmp_path / "2.gguf", tmp_path / "f32.gguf"
    bert.convert_bert(folder, first)
    bert.convert_bert(folder, second)
    assert first.read_bytes() == second.read_bytes()
    bert.convert_bert(folder, full, outtype="f32")
    assert fields(full)["general.file_type"] == int(gguf.LlamaFileType.ALL_F32)
    written = {t.name: t for t in gguf.GGUFReader(full).tensors}
    np.testing.assert_array_equal(np.asarray(written["blk.0.attn_v.weight"].data),
                                  tensors["encoder.layer.0.attention.self.value.weight"])


def test_convert_reads_bert_prefixed_and_gamma_beta_names(checkpoint: tuple[Path, dict[str, np.ndarray]],
                                                          tmp_path: Path) -> None:
    folder, tensors = checkpoint
    renamed = {}
    for name, array in tensors.items():
        name = name.replace("LayerNorm.weight", "LayerNorm.gamma").replace("LayerNorm.bias", "LayerNorm.beta")
        renamed["bert." + name] = array
    renamed["cls.predictions.bias"] = np.zeros(VOCAB_SIZE, dtype=np.float32)  # an MLM head: dropped
    (folder / "model.safetensors").write_bytes(safetensors_bytes(renamed))
    config = json.loads((folder / "config.json").read_text())
    config["architectures"] = ["BertForMaskedLM"]
    (folder / "config.json").write_text(json.dumps(config))
    out = tmp_path / "renamed.gguf"
    bert.convert_bert(folder, out)
    names = {t.name for t in gguf.GGUFReader(out).tensors}
    assert "token_embd_norm.weight" in names and "blk.1.layer_output_norm.bias" in names
    assert len(names) == 5 + 16 * LAYERS


@pytest.mark.parametrize("problem", ["architecture", "tensor", "tokenizer", "outtype", "pooling"])
def test_convert_refuses_what_it_cannot_convert(checkpoint: tuple[Path, dict[str, np.ndarray]],
                                                tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                problem: str) -> None:
    folder, tensors = checkpoint
    outtype = "f16"
    if problem == "architecture":
        config = json.loads((folder / "config.json").read_text())
        config["architectures"] = ["LlamaForCausalLM"]
        (folder / "config.json").write_text(json.dumps(config))
    elif problem == "tensor":
        tensors["encoder.layer.0.mystery.weight"] = np.zeros(3, dtype=np.float32)
        (folder / "model.safetensors").write_bytes(safetensors_bytes(tensors))
    elif problem == "tokenizer":
        monkeypatch.setattr(bert, "_KNOWN_PRE", {})
    elif problem == "pooling":
        (folder / "1_Pooling" / "config.json").write_text(json.dumps({"pooling_mode_max_tokens": True}))
    else:
        outtype = "q4_0"
    out = tmp_path / "refused.gguf"
    with pytest.raises(ValueError):
        bert.convert_bert(folder, out, outtype=outtype)
    assert not out.exists()  # refused before anything was written
