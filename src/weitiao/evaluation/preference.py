"""Implicit rewards of a policy trained against a reference (DPO, KTO): r(x, y) = beta * log(pi(y|x) / ref(y|x)).

DPO's reparameterisation (Rafailov et al. 2023, arXiv:2305.18290, eq. 5) makes this the reward the policy is
optimal for, up to a function of x alone; so on a held-out pair, r(x, y_chosen) > r(x, y_rejected) says the policy
moved towards the preferred answer, and the share of such pairs is the "reward accuracy" TRL logs. Computed here
the same way for every trainer, from the policy and its reference (a peft model's frozen "ref" adapter, its
disabled adapters, or a second model).
"""
from __future__ import annotations

import contextlib

import torch

from weitiao.data.encode import EncodedPair


@torch.no_grad()
def answer_logps(model, pairs: list[EncodedPair], which: str, pad_id: int, batch_size: int = 8,
                 amp_dtype=None) -> list[float]:
    """sum_t log p(answer_t | prompt, answer_<t) of each pair's `which` ("chosen"/"rejected") answer."""
    model.eval()
    device = next(model.parameters()).device
    out: list[float] = []
    for start in range(0, len(pairs), batch_size):
        chunk = pairs[start:start + batch_size]
        seqs = [p.prompt_ids + getattr(p, f"{which}_ids") for p in chunk]
        width = max(len(s) for s in seqs)
        ids = torch.full((len(seqs), width), pad_id, dtype=torch.long)
        mask = torch.zeros((len(seqs), width), dtype=torch.long)
        answer = torch.zeros((len(seqs), width), dtype=torch.bool)  # positions of answer tokens
        for i, (p, s) in enumerate(zip(chunk, seqs)):
            ids[i, :len(s)] = torch.tensor(s)
            mask[i, :len(s)] = 1
            answer[i, len(p.prompt_ids):len(s)] = True
        ids, mask, answer = ids.to(device), mask.to(device), answer.to(device)
        with torch.autocast(device.type, dtype=amp_dtype, enabled=amp_dtype is not None):
            logits = model(input_ids=ids, attention_mask=mask, use_cache=False).logits  # (B, T, V)
        logps = torch.log_softmax(logits[:, :-1].float(), -1).gather(2, ids[:, 1:, None])[..., 0]  # (B, T-1)
        out += (logps * answer[:, 1:]).sum(-1).tolist()
    return out


def reference_context(model, ref_model=None):
    """A context in which `model` (or `ref_model`) computes the reference: TRL's frozen "ref" adapter when the
    trainer made one, else the peft model with its adapters disabled."""
    if ref_model is not None:
        return contextlib.nullcontext(ref_model)
    from trl.trainer.utils import use_adapter

    @contextlib.contextmanager
    def ctx():
        with use_adapter(model, "ref" if "ref" in model.peft_config else None):
            yield model

    return ctx()


def implicit_rewards(model, pairs: list[EncodedPair], beta: float, pad_id: int, ref_model=None,
                     batch_size: int = 8, amp_dtype=None) -> dict:
    """Reward accuracy, mean margin and mean rewards of the policy on `pairs`."""
    policy = {w: answer_logps(model, pairs, w, pad_id, batch_size, amp_dtype) for w in ("chosen", "rejected")}
    with reference_context(model, ref_model) as ref:
        reference = {w: answer_logps(ref, pairs, w, pad_id, batch_size, amp_dtype) for w in ("chosen", "rejected")}
    reward = {w: [beta * (p - r) for p, r in zip(policy[w], reference[w])] for w in policy}
    return reward_summary(policy, reward)


def length_normalised_rewards(model, pairs: list[EncodedPair], beta: float, pad_id: int, batch_size: int = 8,
                              amp_dtype=None) -> dict:
    """The reward of the reference-free methods, which have no starting model to compare with: SimPO's
    beta / |y| * log pi(y|x) (Meng et al. 2024, arXiv:2405.14734, eq. 4), the mean log-probability per answer
    token; ORPO (Hong et al. 2024, arXiv:2403.07691) raises the odds of the same per-token mean. Accuracy: the
    share of pairs whose chosen answer gets the higher reward."""
    policy = {w: answer_logps(model, pairs, w, pad_id, batch_size, amp_dtype) for w in ("chosen", "rejected")}
    reward = {w: [beta * lp / max(len(getattr(p, f"{w}_ids")), 1) for lp, p in zip(policy[w], pairs)]
              for w in policy}
    return reward_summary(policy, reward)


def reward_summary(policy: dict, reward: dict) -> dict:
    """Accuracy (the chosen answer's reward is the higher), mean margin, mean rewards and mean log-probabilities,
    from per-pair lists under "chosen" and "rejected"."""
    n = max(len(reward["chosen"]), 1)
    margins = [c - r for c, r in zip(reward["chosen"], reward["rejected"])]
    return {"pairs": len(reward["chosen"]),
            "reward_accuracy": round(sum(m > 0 for m in margins) / n, 6),
            "reward_margin": round(sum(margins) / n, 6),
            "chosen_reward": round(sum(reward["chosen"]) / n, 6),
            "rejected_reward": round(sum(reward["rejected"]) / n, 6),
            "chosen_logp": round(sum(policy["chosen"]) / n, 6),
            "rejected_logp": round(sum(policy["rejected"]) / n, 6)}
