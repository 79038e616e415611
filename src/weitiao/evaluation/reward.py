"""Scores from a reward model: one number per (prompt, answer) sequence, and pairwise accuracy on preference pairs.

A reward model is a sequence classifier with one output (Ouyang et al. 2022, arXiv:2203.02155, sec. 3.5): the
score is the head's output at the last non-pad token. It is trained so that r(x, y_chosen) > r(x, y_rejected),
so its pairwise accuracy on held-out pairs is its test.
"""
from __future__ import annotations

from pathlib import Path

import torch

from weitiao.data.encode import EncodedPair, encode
from weitiao.data.formats import Example


@torch.no_grad()
def sequence_rewards(model, sequences: list[list[int]], pad_id: int, batch_size: int = 16, amp_dtype=None
                     ) -> list[float]:
    """The reward of each token sequence; rows are right-padded, and the model finds each row's last real token
    through `config.pad_token_id`, as in training."""
    model.eval()
    device = next(model.parameters()).device
    out: list[float] = []
    for start in range(0, len(sequences), batch_size):
        chunk = sequences[start:start + batch_size]
        width = max(len(s) for s in chunk)
        ids = torch.full((len(chunk), width), pad_id, dtype=torch.long)
        mask = torch.zeros((len(chunk), width), dtype=torch.long)
        for i, s in enumerate(chunk):
            ids[i, :len(s)] = torch.tensor(s)
            mask[i, :len(s)] = 1
        with torch.autocast(device.type, dtype=amp_dtype, enabled=amp_dtype is not None):
            logits = model(input_ids=ids.to(device), attention_mask=mask.to(device)).logits  # (B, 1)
        out += logits[:, 0].float().tolist()
    return out


def pairwise(model, pairs: list[EncodedPair], pad_id: int, batch_size: int = 16, amp_dtype=None) -> dict:
    """Accuracy (share of pairs with r_chosen > r_rejected), mean margin and mean rewards, and per-pair rewards."""
    chosen = sequence_rewards(model, [p.prompt_ids + p.chosen_ids for p in pairs], pad_id, batch_size, amp_dtype)
    rejected = sequence_rewards(model, [p.prompt_ids + p.rejected_ids for p in pairs], pad_id, batch_size,
                                amp_dtype)
    n = max(len(pairs), 1)
    return {
        "accuracy": round(sum(c > r for c, r in zip(chosen, rejected)) / n, 6),
        "margin": round(sum(c - r for c, r in zip(chosen, rejected)) / n, 6),
        "chosen_reward": round(sum(chosen) / n, 6),
        "rejected_reward": round(sum(rejected) / n, 6),
        "per_pair": [{"chosen": round(c, 5), "rejected": round(r, 5)} for c, r in zip(chosen, rejected)],
    }


class RewardScorer:
    """A finished `task: reward` run, loaded once, that scores (conversation, answer) pairs: each conversation is
    rendered with the reward run's own template and tokenized as in its training."""

    _loaded: dict = {}  # run folder -> RewardScorer; base and tuned answers are scored by the same loaded model

    def __init__(self, run_dir: Path, device: str, amp_dtype=None, batch_size: int = 16):
        from weitiao.config import load_config
        from weitiao.models.loading import load_classifier, pick_dtype
        from weitiao.models.resolve import attach_adapter, find_model
        from weitiao.runs import load_run, run_template

        config_path, adapter, model_dir = load_run(run_dir)
        cfg = load_config(config_path)
        _, folder, self.tokenizer, _ = find_model(cfg, model_dir)
        self.template = run_template(run_dir, self.tokenizer)
        model = load_classifier(folder, ["reward"], pick_dtype(cfg.model.dtype, device), device,
                                cfg.model.trust_remote_code, cfg.model.attn_implementation,
                                self.tokenizer.pad_token_id)
        self.model, _ = attach_adapter(model, adapter)
        self.amp_dtype, self.batch_size, self.max_length = amp_dtype, batch_size, cfg.data.max_length

    @classmethod
    def of(cls, run_dir: str, device: str, amp_dtype=None, batch_size: int = 16) -> "RewardScorer":
        key = str(Path(run_dir).expanduser().resolve())
        if key not in cls._loaded:
            cls._loaded[key] = cls(Path(key), device, amp_dtype, batch_size)
        return cls._loaded[key]

    def score(self, examples: list[Example], answers: list[str]) -> list[float]:
        """The reward of each answer given its example's conversation (all turns but the last answer)."""
        sequences = []
        for ex, answer in zip(examples, answers):
            turns = ex.messages[:-1] + (("assistant", answer.strip() or " "),)
            ids = encode(Example(turns, None, ex.where), self.template, self.tokenizer, "last_assistant").input_ids
            sequences.append(ids[: self.max_length])
        return sequence_rewards(self.model, sequences, self.tokenizer.pad_token_id, self.batch_size, self.amp_dtype)
