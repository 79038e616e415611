"""Attention over a padding-free row one example at a time (`train.packed_attention: segments`).

A padding-free batch is one row of T tokens holding several examples (data.dataset.PaddingFreeCollator). transformers'
`sdpa` attention keeps them apart with a block-diagonal mask over the whole row: one kernel call that scores all
T x T query-key pairs, most of them masked. Here each example of t_i tokens gets its own causal call instead, so
attention costs sum(t_i^2) / 2 pairs, as flash-attention's variable-length kernels do on a GPU. The example
boundaries come from the batch itself: the collator's `cu_seq_lens_q` (cumulative lengths, [0, t_1, t_1 + t_2, ...],
the same keyword transformers' flash-attention path reads), passed by the model down to its attention function.

It is registered under transformers' AttentionInterface (and AttentionMaskInterface, with sdpa's mask) as
`weitiao_segments`, and the model is switched to it only while it trains (`training_attention`): a padded batch, a
batch without boundaries, decoding with a KV cache, sliding-window or soft-capped attention all go to transformers'
own sdpa function unchanged, and the saved model never names it.

On a CPU, a short example's attention runs in fp32 even under bf16 autocast. torch 2.13's CPU flash-attention
kernel is slower in bf16 than in fp32 for short sequences: forward and backward of 9 query heads (3 key/value
heads) of width 64 took 2.25 ms in bf16 against 0.89 ms in fp32 at 64 tokens, 6.5 against 5.1 ms at 256, and about
the same at 512 (a 2-core Xeon with AMX); the casts of q, k, v are small next to that.

What it buys (SmolLM2-135M LoRA under bf16 autocast, batches of 8, that Xeon, bench/speed.py): with bf16 base
weights (model.dtype auto there), rows of 40-400 tokens trained 1.74x faster than under the block mask at 0.74x
the peak memory, rows of 40-110 tokens 1.27x faster. With fp32 weights, 1.27x and 0.79x on the long rows, and the
same speed on the short ones (104.6 against 103.2 trained tokens/s, median of 3), where each call's fixed cost
(about 1.7 ms per example and layer, forward and backward, in a profile) eats what the smaller attention saves.
"""
from __future__ import annotations

import contextlib

import torch
import torch.nn.functional as F

from weitiao.training.attention_interface import packed_causal_row, register_attention

NAME = "weitiao_segments"
# Examples shorter than this run their attention in fp32 on a CPU (see the module docstring for the measurement).
CPU_FP32_BELOW = 512


def segment_sdpa(module, query, key, value, attention_mask, dropout: float = 0.0, scaling: float | None = None,
                 is_causal: bool | None = None, **kwargs):
    """transformers' attention-function signature: query (B, H, T, D), key and value (B, H_kv, T, D); returns the
    output as (B, T, H, D) and no weights. One causal sdpa call per example of a padding-free row; anything else
    is transformers' sdpa function."""
    from transformers.integrations.sdpa_attention import sdpa_attention_forward

    cu_seq_lens = kwargs.get("cu_seq_lens_q")
    if not packed_causal_row(module, query, key, is_causal, kwargs):
        return sdpa_attention_forward(module, query, key, value, attention_mask, dropout=dropout, scaling=scaling,
                                      is_causal=is_causal, **kwargs)
    bounds = [int(b) for b in cu_seq_lens.tolist()]
    if bounds[-1] != query.shape[2]:
        raise ValueError(f"cu_seq_lens_q ends at {bounds[-1]}, but the row holds {query.shape[2]} tokens")
    gqa = query.shape[1] != key.shape[1]  # grouped-query attention: key/value heads shared by groups of queries
    # split, not slices: autograd then joins the examples' gradients with one concatenation, where each slice's
    # backward would write its gradient into a zero tensor of the whole row's size
    lengths = [end - start for start, end in zip(bounds[:-1], bounds[1:])]
    outputs = []
    for q, k, v in zip(query.split(lengths, dim=2), key.split(lengths, dim=2), value.split(lengths, dim=2)):
        # q (1, heads, t, D); k, v (1, kv heads, t, D)
        upcast = q.device.type == "cpu" and q.dtype in (torch.bfloat16, torch.float16) and q.shape[2] < CPU_FP32_BELOW
        with torch.autocast(q.device.type, enabled=False) if upcast else contextlib.nullcontext():
            if upcast:
                q, k, v = q.float(), k.float(), v.float()
            out = F.scaled_dot_product_attention(q, k, v, dropout_p=dropout, is_causal=True, scale=scaling,
                                                 enable_gqa=gqa)
        outputs.append(out.to(query.dtype))
    return torch.cat(outputs, dim=2).transpose(1, 2).contiguous(), None  # (1, T, H, D)


def register() -> None:
    """Make `weitiao_segments` known to transformers (idempotent)."""
    register_attention(NAME, segment_sdpa)


def usable(model) -> bool:
    """Whether the model runs transformers' sdpa attention through the AttentionInterface (the functional approach
    every current decoder follows), so the switch reaches every layer."""
    config = getattr(model, "config", None)
    return (getattr(config, "_attn_implementation", None) == "sdpa"
            and bool(getattr(model, "_can_set_attn_implementation", lambda: False)()))


# train.packed_attention's kinds that switch the model's attention while it trains -> the registered name
PACKED_ATTENTIONS = {"segments": NAME, "flex": "weitiao_flex", "flash": "flash_attention_2"}


@contextlib.contextmanager
def training_attention(model, kind: str | None):
    """Within the block the model (a transformers PreTrainedModel, not a peft wrapper) uses the attention of
    `kind` (`segments`: weitiao_segments; `flex`: training.flex_attention's weitiao_flex; `flash`: transformers'
    flash_attention_2); afterwards its attention is what it was. Nothing changes for None (or `mask`)."""
    if kind not in PACKED_ATTENTIONS:
        yield
        return
    from weitiao.training import flex_attention

    register()
    flex_attention.register()
    before = model.config._attn_implementation
    model.set_attn_implementation(PACKED_ATTENTIONS[kind])
    try:
        yield
    finally:
        model.set_attn_implementation(before)
