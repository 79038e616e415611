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


@torch.no_grad()
def keeps_examples_apart(model, vocab_size: int, lengths=(6, 9), atol: float = 1e-3) -> bool:
    """Whether `model` gives each of two random examples the same logits packed into one row as alone."""
    device = next(model.parameters()).device
    generator = torch.Generator().manual_seed(0)
    examples = [torch.randint(3, max(4, min(vocab_size, 1000)), (n,), generator=generator) for n in lengths]
    was_training = model.training
    model.eval()
    try:
        alone = [model(input_ids=x[None].to(device), use_cache=False).logits[0, -len(x):].float() for x in examples]
        packed = model(input_ids=torch.cat(examples)[None].to(device),
                       position_ids=torch.cat([torch.arange(n) for n in lengths])[None].to(device),
                       use_cache=False).logits[0].float()
    except (TypeError, ValueError, RuntimeError):  # a forward that takes no position ids
        return False
    finally:
        model.train(was_training)
    want = torch.cat(alone)
    return packed.shape == want.shape and float((packed - want).abs().max()) <= atol * max(1.0, float(want.abs().max()))
