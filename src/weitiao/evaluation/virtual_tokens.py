"""Cached decoding for prompt-learning adapters (prefix tuning / P-Tuning v2, prompt tuning, P-tuning).

Why this exists: with peft 0.21 and transformers 5, `PeftModel.generate()` with the KV cache is wrong for these
methods. For prefix tuning it silently drops the prefix (the logits equal the base model's); for prompt tuning and
P-tuning it is right for the first token and wrong from the second on. Turning the cache off is right but costs
O(T^2) per answer. This module drives the base model itself, with a cache that starts out holding the virtual tokens,
so it is both right and fast. Tests compare it token for token with an uncached step-by-step reference.

Positions follow training. In training, batches are right-padded and peft puts the virtual tokens first, so the
n_virtual virtual tokens take positions 0..n_virtual-1 and the real tokens n_virtual, n_virtual+1, ... Here prompts
are left-padded for batching, so each real token's position is n_virtual + (its index among the row's real tokens).

- prefix (Li & Liang 2021, arXiv:2101.00190; P-Tuning v2, Liu et al. 2022, arXiv:2110.07602): the cache is
  seeded with the trained per-layer keys/values, `get_prompt(B)`: n_layers x (B, n_kv_heads, n_virtual, head_dim).
- prompt tuning (Lester et al. 2021, arXiv:2104.08691) and P-tuning (Liu et al. 2021, arXiv:2103.10385): the virtual
  token embeddings `get_prompt(B)`: (B, n_virtual, hidden) go in front of the prompt's embeddings in the first
  forward; their keys/values then live in the cache like any token's.
"""
from __future__ import annotations

import torch

PROMPT_LEARNING_TYPES = {"PREFIX_TUNING", "PROMPT_TUNING", "P_TUNING"}


def cache_kwarg(base) -> str:
    """The forward argument that takes a KV cache: `cache` in recent transformers 5 releases, `past_key_values`
    before the rename (both exist in the range weitiao supports)."""
    import inspect

    return "cache" if "cache" in inspect.signature(base.forward).parameters else "past_key_values"


def returned_cache(out):
    return out.cache if "cache" in out else out.past_key_values


def peft_type(model) -> str | None:
    """The active peft method's name ("LORA", "PREFIX_TUNING", ...) or None for a plain model."""
    config = getattr(model, "active_peft_config", None)
    if config is None:
        return None
    kind = config.peft_type
    return getattr(kind, "value", kind)


def uses_virtual_tokens(model) -> bool:
    return peft_type(model) in PROMPT_LEARNING_TYPES


def first_forward(model, input_ids: torch.Tensor, attention_mask: torch.Tensor):
    """Run the prompt with the virtual tokens through the base model; returns (outputs, mask, next positions).

    input_ids, attention_mask: (B, T), left-padded. The returned mask covers virtual + real tokens: (B, n_virtual+T).
    """
    config = model.active_peft_config
    base = model.get_base_model()
    batch, n_virtual = input_ids.shape[0], config.num_virtual_tokens
    mask = torch.cat([attention_mask.new_ones(batch, n_virtual), attention_mask], dim=1)
    # position of each real token: n_virtual + its index among the real tokens; pads (masked) get n_virtual - 1
    positions = n_virtual + attention_mask.long().cumsum(-1) - 1
    positions = positions.clamp(min=n_virtual - 1)
    # The virtual tokens are computed in fp32 even under autocast: a saved adapter holds the prompt encoder's fp32
    # output, so the model that was trained and the one reloaded from disk then decode from the same numbers.
    with torch.autocast(input_ids.device.type, enabled=False):
        virtual = model.get_prompt(batch_size=batch)
    if peft_type(model) == "PREFIX_TUNING":
        cache = virtual  # a DynamicCache already holding n_virtual positions
        out = base(input_ids=input_ids, attention_mask=mask, position_ids=positions, use_cache=True,
                   logits_to_keep=1, **{cache_kwarg(base): cache})
    else:
        embeds = base.get_input_embeddings()(input_ids)
        prompts = virtual.to(embeds.dtype)  # (B, n_virtual, hidden)
        virtual_positions = torch.arange(n_virtual, device=input_ids.device).expand(batch, n_virtual)
        out = base(inputs_embeds=torch.cat([prompts, embeds], dim=1), attention_mask=mask,
                   position_ids=torch.cat([virtual_positions, positions], dim=1), use_cache=True, logits_to_keep=1)
    return out, mask, positions[:, -1] + 1


@torch.no_grad()
def generate_ids(model, input_ids: torch.Tensor, attention_mask: torch.Tensor, max_new_tokens: int,
                 stop_ids: tuple[int, ...], pad_id: int, logits_processor=None, sample: bool | None = None
                 ) -> torch.Tensor:
    """Greedy (or sampled) decoding with the KV cache, `logits_processor` applied to each step's logits first;
    returns (B, T+new). `sample` None: sample exactly when there is a processor (temperature/top-p warpers).

    A row stops at its first stop token; later positions hold `pad_id`. The loop ends when every row stopped.
    """
    sequence = input_ids
    for token in decode_steps(model, input_ids, attention_mask, max_new_tokens, stop_ids, pad_id, logits_processor,
                              sample):
        sequence = torch.cat([sequence, token[:, None]], dim=1)
    return sequence


@torch.no_grad()
def decode_steps(model, input_ids: torch.Tensor, attention_mask: torch.Tensor, max_new_tokens: int,
                 stop_ids: tuple[int, ...], pad_id: int, logits_processor=None, sample: bool | None = None):
    """Yields the next token of every row, (B,), one decoding step at a time (streaming uses it directly).
    `logits_processor` and `sample` as in `generate_ids`.

    A row that has stopped yields `pad_id`; the generator ends when every row stopped or after max_new_tokens.
    """
    out, mask, next_pos = first_forward(model, input_ids, attention_mask)
    base = model.get_base_model()
    cache, cache_arg = returned_cache(out), cache_kwarg(base)
    logits = out.logits[:, -1, :].float()
    stops = torch.tensor(list(stop_ids), device=input_ids.device)
    done = torch.zeros(input_ids.shape[0], dtype=torch.bool, device=input_ids.device)
    sequence = input_ids
    sample = logits_processor is not None if sample is None else sample
    for _ in range(max_new_tokens):
        if logits_processor is not None:
            logits = logits_processor(sequence, logits)
        token = torch.multinomial(torch.softmax(logits, dim=-1), 1).squeeze(1) if sample else logits.argmax(dim=-1)
        token = torch.where(done, torch.full_like(token, pad_id), token)
        sequence = torch.cat([sequence, token[:, None]], dim=1)
        done |= torch.isin(token, stops)
        yield token
        if bool(done.all()):
            break
        mask = torch.cat([mask, mask.new_ones(mask.shape[0], 1)], dim=1)
        out = base(input_ids=token[:, None], attention_mask=mask, position_ids=next_pos[:, None], use_cache=True,
                   **{cache_arg: cache})
        cache, next_pos = returned_cache(out), next_pos + 1
        logits = out.logits[:, -1, :].float()


@torch.no_grad()
def reference_ids(model, input_ids: torch.Tensor, max_new_tokens: int, stop_ids: tuple[int, ...]) -> torch.Tensor:
    """The slow ground truth for one unpadded prompt (1, T): every step re-runs peft's own training forward over
    the whole sequence, no cache. Used by tests to check `generate_ids`."""
    sequence = input_ids
    for _ in range(max_new_tokens):
        logits = model(input_ids=sequence, attention_mask=torch.ones_like(sequence), use_cache=False).logits
        token = logits[:, -1, :].float().argmax(dim=-1)
        sequence = torch.cat([sequence, token[:, None]], dim=1)
        if int(token) in stop_ids:
            break
    return sequence
