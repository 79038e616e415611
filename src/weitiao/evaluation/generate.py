"""Batched generation with identical decoding for every model compared."""
from __future__ import annotations

from contextlib import contextmanager

import torch
from transformers import StoppingCriteria, StoppingCriteriaList

from weitiao.config import GenerationConfig
from weitiao.evaluation.virtual_tokens import generate_ids, uses_virtual_tokens
from weitiao.methods import unwrapped


@torch.no_grad()
def generate(model, tokenizer, prompts: list[str], gen: GenerationConfig, stop_ids: tuple[int, ...],
             autocast_dtype=None, progress=None, first_line: bool = False) -> list[str]:
    """Complete each prompt; prompts are left-padded in batches and decoded without special tokens.

    `first_line`: a row also stops once its answer holds a non-empty line and a newline after it (a one-line
    answer, such as a rephrasing, needs nothing more); not for prompt-learning adapters.

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
        with contiguous_head_input(model):
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
                if gen.repetition_penalty != 1.0:
                    kwargs.update(repetition_penalty=gen.repetition_penalty)
                if first_line:
                    kwargs.update(stopping_criteria=StoppingCriteriaList([FirstLineDone(tokenizer,
                                                                             batch["input_ids"].shape[1])]))
                with torch.autocast(device.type, dtype=autocast_dtype, enabled=autocast_dtype is not None):
                    if uses_virtual_tokens(model):
                        out = generate_ids(model, batch["input_ids"], batch["attention_mask"], gen.max_new_tokens,
                                           tuple(stop_ids), tokenizer.pad_token_id, logits_processors(gen),
                                           gen.do_sample)
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


class FirstLineDone(StoppingCriteria):
    """A transformers stopping criterion: per row, True once the new text holds a non-empty line followed by a
    newline. Decoding only the new tokens of each row costs little next to a forward pass."""

    def __init__(self, tokenizer, prompt_length: int):
        self.tokenizer, self.prompt_length = tokenizer, prompt_length

    def __call__(self, input_ids: torch.Tensor, scores, **kwargs) -> torch.Tensor:
        texts = self.tokenizer.batch_decode(input_ids[:, self.prompt_length:], skip_special_tokens=True)
        return torch.tensor(["\n" in t.lstrip() for t in texts], dtype=torch.bool, device=input_ids.device)


@contextmanager
def contiguous_head_input(model):
    """Makes the output head's input contiguous while generating.

    After a prefill of B rows, `logits_to_keep=1` hands the head the (B, 1, d) slice [:, -1:, :] of the (B, T, d)
    hidden states, which is not contiguous. torch's matmul folds a 3-D input into one (B, d) x (d, V) product only
    when it can view it so, or when the weight needs a gradient; for a frozen head (LoRA and every other method that
    freezes the base) it broadcasts the (d, V) head to (B, d, V) and copies it. With SmolLM2's 49152 x 576 head and
    40 rows that copy was 2.1 GB and 3.6 s of each prefill (torch 2.13 on a CPU, bf16): the quickstart's peak
    memory came from it. Contiguous, the slice costs B x d copied values."""
    inner = unwrapped(model)
    head = inner.get_output_embeddings() if hasattr(inner, "get_output_embeddings") else None
    if head is None:
        yield
        return
    # a hook that returns None leaves the arguments as they are (a head called with keywords only)
    handle = head.register_forward_pre_hook(lambda module, args: (args[0].contiguous(), *args[1:]) if args else None)
    try:
        yield
    finally:
        handle.remove()


def logits_processors(gen: GenerationConfig):
    """The processors `generate()` would apply for these settings, in its order (the repetition penalty, then
    the temperature and top-p warpers when sampling); None when there are none."""
    from transformers import (
        LogitsProcessorList, RepetitionPenaltyLogitsProcessor, TemperatureLogitsWarper, TopPLogitsWarper,
    )

    found = [RepetitionPenaltyLogitsProcessor(gen.repetition_penalty)] if gen.repetition_penalty != 1.0 else []
    if gen.do_sample:
        found += [TemperatureLogitsWarper(gen.temperature), TopPLogitsWarper(gen.top_p)]
    return LogitsProcessorList(found) if found else None
