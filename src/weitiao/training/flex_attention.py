"""Attention over a padding-free row with FlexAttention and a document mask (`train.packed_attention: flex`).

A padding-free row of T tokens holds several examples (data.dataset.PaddingFreeCollator). transformers' sdpa keeps
them apart with a dense T x T mask, so every query-key pair of the row is scored. FlexAttention (PyTorch's
`torch.nn.attention.flex_attention`; Dong et al. 2024, arXiv:2412.05496) takes the mask as a function and a
`BlockMask`, the list of 128 x 128 blocks of the score matrix the function leaves anything in, and its compiled
kernel skips the other blocks: with a document mask (a query sees a key of its own example, at or before itself)
an example of t tokens costs about t^2 / 2 pairs, rounded up to whole blocks, as flash-attention's variable-length
kernels do, in one kernel call per layer instead of weitiao_segments' one call per example.

The block mask is built once per batch from the collator's `cu_seq_lens_q` (cumulative example lengths, on the
device), reused by every layer of the forward (they get the same tensor), without copying the boundaries to the
host. The kernel is compiled once per process: torch.compile compiles for the first row length it sees, and on
the second length recompiles with the length dynamic, after which new lengths reuse that kernel. Rows are rounded
up to `train.padding_free_multiple` tokens. On a CPU torch has FlexAttention's forward only, so training there
uses weitiao_segments; the forward is what the tests compare with the padded batch, and bench/flex_check.py compares
the gradients on a GPU.

Used like weitiao_segments: registered under transformers' AttentionInterface as `weitiao_flex`, switched on only
while training (segment_attention.training_attention); a padded batch, decoding, sliding-window, soft-capped or
dropout attention go to transformers' sdpa function unchanged.
"""
from __future__ import annotations

import torch

from weitiao.training.attention_interface import packed_causal_row, register_attention

NAME = "weitiao_flex"
_kernels: dict = {}  # device type -> the compiled kernel
_last: tuple | None = None  # (cu_seq_lens tensor, BlockMask): the mask of the batch being trained


def trains_on(device: str) -> bool:
    """Whether FlexAttention can train here: torch 2.5 or later, and not on a CPU, where torch (2.13) runs its
    forward only ("FlexAttention does not support backward on CPU")."""
    try:
        import torch.nn.attention.flex_attention  # noqa: F401
    except ImportError:
        return False
    return device != "cpu"


def kernel(device_type: str):
    """flex_attention compiled once per process and device type; eager it would materialise the whole T x T score
    matrix. On a CPU the row length stays static (a kernel per length): torch 2.13's C++ code for the dynamic-length
    kernel does not compile there ("'cur_qSplitSize8' was not declared"), and a CPU runs FlexAttention's forward
    only, in the tests."""
    if device_type not in _kernels:
        from torch.nn.attention.flex_attention import flex_attention

        _kernels[device_type] = torch.compile(flex_attention, dynamic=False if device_type == "cpu" else None)
    return _kernels[device_type]


def document_mask(cu_seq_lens: torch.Tensor, length: int):
    """The BlockMask of a row of `length` tokens whose examples end at `cu_seq_lens[1:]`: causal within each
    example, nothing across. Tokens past the last boundary (none, for the collator's rows) form no example."""
    from torch.nn.attention.flex_attention import create_block_mask

    global _last
    if _last is not None and _last[0] is cu_seq_lens:
        return _last[1]
    positions = torch.arange(length, device=cu_seq_lens.device)
    # example index of each token: how many boundaries after the first lie at or before it, (T,)
    document = torch.searchsorted(cu_seq_lens[1:], positions, right=True)

    def same_example_causal(batch, head, q, kv):
        return (document[q] == document[kv]) & (kv <= q)

    mask = create_block_mask(same_example_causal, None, None, length, length, device=cu_seq_lens.device)
    _last = (cu_seq_lens, mask)
    return mask


def flex_sdpa(module, query, key, value, attention_mask, dropout: float = 0.0, scaling: float | None = None,
              is_causal: bool | None = None, **kwargs):
    """transformers' attention-function signature: query (B, H, T, D), key and value (B, H_kv, T, D); returns the
    output as (B, T, H, D) and no weights. One FlexAttention call under the row's document mask for a
    padding-free row; anything else is transformers' sdpa function."""
    from transformers.integrations.sdpa_attention import sdpa_attention_forward

    if dropout or not packed_causal_row(module, query, key, is_causal, kwargs):  # FlexAttention has no dropout
        return sdpa_attention_forward(module, query, key, value, attention_mask, dropout=dropout, scaling=scaling,
                                      is_causal=is_causal, **kwargs)
    mask = document_mask(kwargs["cu_seq_lens_q"], query.shape[2])
    out = kernel(query.device.type)(query, key, value, block_mask=mask, scale=scaling,
                                    enable_gqa=query.shape[1] != key.shape[1])
    return out.transpose(1, 2).contiguous(), None  # (1, T, H, D)


def register() -> None:
    """Make `weitiao_flex` known to transformers (idempotent)."""
    register_attention(NAME, flex_sdpa)
