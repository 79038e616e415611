"""Fine-tuning methods: each module turns its config section into a change of the model.

`apply_method` returns the model to train; `save_trained` writes what a user loads back: a peft adapter folder for
adapter methods, a complete Hugging Face model folder for the others.
"""
from __future__ import annotations

from weitiao.config import MethodConfig
from weitiao.methods import freeze, full, lora

METHODS = {"full": full, "freeze": freeze, "lora": lora}
ADAPTER_METHODS = {"lora"}


def apply_method(model, cfg: MethodConfig):
    return METHODS[cfg.name].apply(model, cfg)


def count_parameters(model) -> tuple[int, int]:
    """(trainable, total) parameter counts."""
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    total = sum(p.numel() for p in model.parameters())
    return trainable, total


def save_trained(model, tokenizer, out_dir: str, cfg: MethodConfig) -> str:
    """Save the trained weights; returns the folder written ("adapter" or "model" inside out_dir)."""
    import os

    if cfg.name in ADAPTER_METHODS:
        folder = os.path.join(out_dir, "adapter")
        model.save_pretrained(folder)
    else:
        folder = os.path.join(out_dir, "model")
        model.save_pretrained(folder)
        tokenizer.save_pretrained(folder)
    return folder
