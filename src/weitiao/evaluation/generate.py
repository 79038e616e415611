"""Batched generation with identical decoding for every model compared."""
from __future__ import annotations

import torch

from weitiao.config import GenerationConfig
from weitiao.evaluation.virtual_tokens import generate_ids, uses_virtual_tokens


@torch.no_grad()
def generate(model, tokenizer, prompts: list[str], gen: GenerationConfig, stop_ids: tuple[int, ...],
             autocast_dtype=None, progress=None) -> list[str]:
    """Complete each prompt; prompts are left-padded in batches and decoded without special tokens.

    Rows are processed longest-first so each batch holds similar lengths (less padding); the output keeps
    the input order. Prompt-learning adapters (prefix, prompt, ptuning) decode through weitiao's own cached loop,
    because peft's `generate()` gets them wrong with the cache on (see `virtual_tokens`).
    """
    model.eval()
    device = next(model.parameters()).device
    order = sorted(range(len(prompts)), key=lambda i: -len(prompts[i]))
    outputs: list[str] = [""] * len(prompts)
    old_side = tokenizer.padding_side
    tokenizer.padding_side = "left"
    try:
        for start in range(0, len(order), gen.batch_size):
            idx = order[start: start + gen.batch_size]
            batch = tokenizer([prompts[i] for i in idx], return_tensors="pt", padding=True,
                              add_special_tokens=False).to(device)
            kwargs = dict(max_new_tokens=gen.max_new_tokens, do_sample=gen.do_sample,
                          eos_token_id=list(stop_ids), pad_token_id=tokenizer.pad_token_id)
            if gen.do_sample:
                kwargs.update(temperature=gen.temperature, top_p=gen.top_p)
            else:
                kwargs.update(temperature=None, top_p=None, top_k=None)
            with torch.autocast(device.type, dtype=autocast_dtype, enabled=autocast_dtype is not None):
                if uses_virtual_tokens(model):
                    out = generate_ids(model, batch["input_ids"], batch["attention_mask"], gen.max_new_tokens,
                                       tuple(stop_ids), tokenizer.pad_token_id, sampling_warpers(gen))
                else:
                    out = model.generate(**batch, **kwargs)
            new = out[:, batch["input_ids"].shape[1]:]
            for j, i in enumerate(idx):
                outputs[i] = tokenizer.decode(new[j], skip_special_tokens=True).strip()
            if progress:
                progress(min(start + gen.batch_size, len(order)), len(order))
    finally:
        tokenizer.padding_side = old_side
    return outputs


def sampling_warpers(gen: GenerationConfig):
    """The temperature and top-p warpers `generate()` would use; None for greedy decoding."""
    if not gen.do_sample:
        return None
    from transformers import LogitsProcessorList, TemperatureLogitsWarper, TopPLogitsWarper

    return LogitsProcessorList([TemperatureLogitsWarper(gen.temperature), TopPLogitsWarper(gen.top_p)])
