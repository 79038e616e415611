"""Padding-free training batches (data.dataset.PaddingFreeCollator), used only where the loaded model keeps packed
examples apart.

Whether it does depends on the model's code: transformers' decoders that build their mask with
`masking_utils.create_causal_mask` (Llama, Qwen2/3, Mistral, GLM, ...) read restarting position ids as example
boundaries; a model with its own mask code (older or remote-code architectures) would let examples attend to each
other, silently. So the loaded model is asked directly: two short examples, alone and packed into one row, must
give the same logits.
"""
from __future__ import annotations

import torch

from weitiao.data.dataset import PaddingFreeCollator


@torch.no_grad()
def keeps_examples_apart(model, vocab_size: int, lengths=(6, 9), atol: float | None = None,
                         collator: PaddingFreeCollator | None = None) -> bool:
    """Whether `model` gives each of two random examples the same logits packed into one row (as `collator`, by
    default a plain PaddingFreeCollator, makes it: with its filler example where it rounds the row's length; the
    filler's own logits are not compared) as alone, within `atol` of the largest logit: by default 1e-3, or four
    roundings of the weights' dtype where that is coarser (bf16: 0.031; weitiao's segment attention computes a
    packed row's short examples in fp32 on a CPU, and the lone examples go through sdpa in the weights' dtype). A
    model that mixes examples misses by far more."""
    device = next(model.parameters()).device
    if atol is None:
        dtype = next((p.dtype for p in model.parameters() if p.is_floating_point()), torch.float32)  # not 4-bit
        atol = max(1e-3, 4 * torch.finfo(dtype).eps)
    generator = torch.Generator().manual_seed(0)
    examples = [torch.randint(3, max(4, min(vocab_size, 1000)), (n,), generator=generator) for n in lengths]
    was_training = model.training
    model.eval()
    try:
        alone = [model(input_ids=x[None].to(device), use_cache=False).logits[0, -len(x):].float() for x in examples]
        # the row exactly as training gets it: PaddingFreeCollator's tensors and keywords, without the labels
        row = (collator or PaddingFreeCollator())([{"input_ids": x.tolist(), "labels": x.tolist()} for x in examples])
        row.pop("labels")
        packed = model(**{k: v.to(device) if torch.is_tensor(v) else v for k, v in row.items()}).logits[0].float()
        packed = packed[:sum(lengths)]
    except (TypeError, ValueError, RuntimeError):  # a forward that takes no position ids
        return False
    finally:
        model.train(was_training)
    want = torch.cat(alone)
    return packed.shape == want.shape and float((packed - want).abs().max()) <= atol * max(1.0, float(want.abs().max()))
