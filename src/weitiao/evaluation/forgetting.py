"""A forgetting check: the model's loss on a small general-text set that ships with weitiao, base versus tuned.

Fine-tuning on a narrow task can degrade what the model could do before ("catastrophic forgetting"; Luo et al.
2023, arXiv:2308.08747, measure it for LLMs). A rising loss on ordinary text the run never saw is the cheapest
signal of it: `data/general_text.jsonl` holds 32 short paragraphs written for weitiao (24 English, 8 Chinese:
facts, instructions, letters, a story, question-answer pairs), 2,046 tokens for SmolLM2's tokenizer, so scoring
it takes seconds. Every token is scored as plain text, without the chat template: what is measured is the
language model underneath, not the chat behaviour the run trained.
"""
from __future__ import annotations

import json
from importlib import resources

from weitiao.data.encode import Encoded
from weitiao.evaluation.scoring import mean_loss, token_losses

MAX_TOKENS = 256  # per paragraph; the longest is 120 tokens for SmolLM2, so nothing is cut for ordinary tokenizers


def general_texts() -> list[dict]:
    """The shipped paragraphs, each {"lang": "en"|"zh", "text": ...}."""
    raw = resources.files("weitiao.evaluation").joinpath("data/general_text.jsonl").read_text(encoding="utf-8")
    return [json.loads(line) for line in raw.splitlines() if line.strip()]


def encode_general_texts(tokenizer) -> list[Encoded]:
    """Each paragraph as one example whose every token carries the loss (the tokenizer's BOS, if any, first)."""
    encoded = []
    for row in general_texts():
        ids = tokenizer(row["text"], add_special_tokens=True)["input_ids"][:MAX_TOKENS]
        encoded.append(Encoded(input_ids=ids, labels=list(ids)))
    return encoded


def general_text_losses(model, tokenizer, batch_size: int, amp_dtype) -> list[tuple[float, int]]:
    """Per paragraph: (summed cross-entropy, predicted tokens)."""
    return token_losses(model, encode_general_texts(tokenizer), tokenizer.pad_token_id, batch_size, amp_dtype)


def forgetting_summary(base_rows: list, tuned_rows: list) -> dict:
    """metrics.json's `forgetting`: the general-text loss before and after, with each paragraph's (sum, tokens)
    so that `weitiao compare` can put an interval on the change."""
    base_loss, tuned_loss = mean_loss(base_rows), mean_loss(tuned_rows)
    return {"paragraphs": len(base_rows), "tokens": sum(n for _, n in base_rows), "base_loss": round(base_loss, 6),
            "tuned_loss": round(tuned_loss, 6), "change": round(tuned_loss - base_loss, 6),
            "base": {"rows": [[round(s, 5), n] for s, n in base_rows]},
            "tuned": {"rows": [[round(s, 5), n] for s, n in tuned_rows]}}
