"""Shared fixtures: a tiny random Llama (2 layers, width 64) with a byte-level BPE tokenizer trained here.

Nothing is downloaded. The tokenizer has ChatML special tokens and a ChatML chat template, like SmolLM2.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from weitiao.demo.count_list import build_splits

SPECIALS = ["<|endoftext|>", "<|im_start|>", "<|im_end|>", "<|eot_id|>", "<|user|>", "<|assistant|>",
            "<|system|>", "<|begin_of_text|>", "<|start_header_id|>", "<|end_header_id|>", "[gMASK]", "<sop>"]
CHATML = (
    "{% for message in messages %}{{ '<|im_start|>' + message['role'] + '\\n' + message['content'] + "
    "'<|im_end|>\\n' }}{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}{% endif %}"
)
REPO = Path(__file__).resolve().parents[1]


def build_tokenizer():
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
    trainer = trainers.BpeTrainer(vocab_size=600, special_tokens=SPECIALS,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    tok.train_from_iterator(corpus, trainer)
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, eos_token="<|im_end|>", pad_token="<|endoftext|>",
                                   bos_token="<|im_start|>")
    fast.chat_template = CHATML
    return fast


def build_model(vocab_size: int, seed: int = 0):
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(seed)
    config = LlamaConfig(vocab_size=vocab_size, hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                         num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=512,
                         tie_word_embeddings=True, bos_token_id=1, eos_token_id=2, pad_token_id=0)
    return LlamaForCausalLM(config)


@pytest.fixture(scope="session")
def tiny_tokenizer():
    return build_tokenizer()


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory, tiny_tokenizer) -> Path:
    folder = tmp_path_factory.mktemp("tiny-llama")
    model = build_model(len(tiny_tokenizer))
    model.save_pretrained(folder)
    tiny_tokenizer.save_pretrained(folder)
    return folder


@pytest.fixture(scope="session")
def demo_data_dir(tmp_path_factory) -> Path:
    """A small slice of the demo task (fast to train on)."""
    folder = tmp_path_factory.mktemp("demo-data")
    splits = build_splits(seed=0, sizes={"train": 48, "val": 8, "test": 8})
    for name, rows in splits.items():
        (folder / f"{name}.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    return folder


def write_config(path: Path, model_dir, data_dir, out_dir, **sections) -> Path:
    """A small config for the tiny model; `sections` override whole keys, e.g. train={"max_steps": 4}."""
    cfg = {
        "model": {"name_or_path": str(model_dir)},
        "data": {"format": "messages", "train": str(Path(data_dir) / "train.jsonl"),
                 "val": str(Path(data_dir) / "val.jsonl"), "test": str(Path(data_dir) / "test.jsonl"),
                 "max_length": 128},
        "method": {"name": "lora", "lora": {"r": 4, "alpha": 8}},
        "train": {"max_steps": 4, "batch_size": 4, "learning_rate": 1e-3, "eval_steps": 2, "logging_steps": 1,
                  "precision": "fp32"},
        "eval": {"metrics": ["count_list", "exact_match"], "generation": {"max_new_tokens": 12, "batch_size": 4}},
        "output": {"dir": str(out_dir)},
    }
    for section, values in sections.items():
        cfg.setdefault(section, {}).update(values)
    path.write_text(yaml.safe_dump(cfg))
    return path


def run_cli(*args, cwd=None, timeout=600) -> subprocess.CompletedProcess:
    """Run `python -m weitiao ARGS` in a fresh process, as a user would."""
    env = dict(os.environ, PYTHONWARNINGS="ignore")
    return subprocess.run([sys.executable, "-m", "weitiao", *map(str, args)], capture_output=True, text=True,
                          cwd=cwd, env=env, timeout=timeout)
