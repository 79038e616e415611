"""What weitiao's attention functions for padding-free rows share (training.segment_attention's weitiao_segments,
training.flex_attention's weitiao_flex): which calls they handle themselves, and their registration with
transformers' AttentionInterface."""
from __future__ import annotations


def packed_causal_row(module, query, key, is_causal, kwargs) -> bool:
    """Whether a call is one padding-free row (batch 1, with the collator's boundaries) of plain causal
    self-attention, which weitiao_segments and weitiao_flex attend example by example; anything else (a padded
    batch, decoding with a cache, sliding-window, soft-capped or biased attention) goes to sdpa unchanged."""
    return (kwargs.get("cu_seq_lens_q") is not None and query.shape[0] == 1 and query.shape[2] == key.shape[2]
            and kwargs.get("sliding_window") is None and kwargs.get("softcap") is None
            and kwargs.get("position_bias") is None and is_causal is not False
            and getattr(module, "is_causal", True))


def register_attention(name: str, function) -> None:
    """Make attention `function` known to transformers as `name` (idempotent), with sdpa's mask builder for the
    batches it hands to sdpa."""
    from transformers import AttentionInterface
    from transformers.masking_utils import ALL_MASK_ATTENTION_FUNCTIONS, sdpa_mask

    AttentionInterface.register(name, function)
    ALL_MASK_ATTENTION_FUNCTIONS.register(name, sdpa_mask)
