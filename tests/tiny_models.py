"""Tiny models built inside the tests: a random 2-layer Llama with a word-level tokenizer and chat template."""
from pathlib import Path

from retrieval.model_store import write_manifest

CHAT_TEMPLATE = (
    "{% for m in messages %}<|im_start|>{{ m['role'] }}\n{{ m['content'] }}<|im_end|>\n{% endfor %}"
    "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)


def build_tiny_generator(folder: Path, initializer_range: float = 0.02) -> Path:
    """A wide ``initializer_range`` makes the next token clear-cut (no near ties between rows of a batch)."""
    import torch
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

    words = ["<unk>", "<|im_start|>", "<|im_end|>", "<pad>"] + [f"w{i}" for i in range(60)] + \
        "the answer is in passage [ 1 2 ] question passages : you are a".split()
    vocab = {w: i for i, w in enumerate(dict.fromkeys(words))}
    core = Tokenizer(models.WordLevel(vocab, unk_token="<unk>"))
    core.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    tokenizer = PreTrainedTokenizerFast(tokenizer_object=core, unk_token="<unk>", eos_token="<|im_end|>",
                                        pad_token="<pad>", bos_token="<|im_start|>")
    tokenizer.chat_template = CHAT_TEMPLATE
    torch.manual_seed(0)
    config = LlamaConfig(vocab_size=len(vocab), hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                         num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=2048,
                         eos_token_id=vocab["<|im_end|>"], pad_token_id=vocab["<pad>"],
                         initializer_range=initializer_range)
    LlamaForCausalLM(config).save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    write_manifest(folder, "built in the test")
    return folder


WORDS = ("refund refunds paid days invoice invoices monthly email cookies privacy data team teams invite "
         "settings page export csv stats account password reset billing plan cancel subscription how do i "
         "are is the a of to in we never use store personal within five ten colleagues from can my "
         "what when where why who get set up change delete add new site website").split()


def build_tiny_sentence_encoder(folder: Path, hidden: int = 32, seed: int = 0, layers: int = 1) -> Path:
    """A random BERT (1 layer unless told) with mean pooling, saved as a sentence-transformers folder with a manifest."""
    import torch
    from sentence_transformers import SentenceTransformer
    from sentence_transformers.sentence_transformer import modules as models
    from transformers import BertConfig, BertModel, BertTokenizerFast

    raw = folder.parent / f"{folder.name}-raw"
    raw.mkdir(parents=True, exist_ok=True)
    vocab = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", ".", ",", "?", ">", ":"] + sorted(set(WORDS))
    (raw / "vocab.txt").write_text("\n".join(vocab) + "\n")
    BertTokenizerFast(vocab_file=str(raw / "vocab.txt")).save_pretrained(raw)
    torch.manual_seed(seed)
    BertModel(BertConfig(vocab_size=len(vocab), hidden_size=hidden, num_hidden_layers=layers, num_attention_heads=2,
                         intermediate_size=2 * hidden, max_position_embeddings=512)).save_pretrained(raw)
    transformer = models.Transformer(str(raw), max_seq_length=256)
    SentenceTransformer(modules=[transformer, models.Pooling(hidden, "mean")], device="cpu").save(str(folder))
    write_manifest(folder, "built in the test")
    return folder
