"""Logits only where a trained token is predicted (`train.logits_at_labels_only`).

A causal LM's head turns every position's hidden state into vocabulary logits, (B, T, V) floats, and the loss
then ignores every position whose next token carries no label: the prompt, the system turn, the padding. For
chat fine-tuning that is most positions (the demo task trains 40% of its tokens), and the head is one of the
largest matmuls of a small model (SmolLM2-135M: V x d = 49,152 x 576, 21% of the parameters), while the (B, T, V)
logits and their fp32 copy for the loss are the largest activations of all (Wijmans et al. 2024, "Cut Your Losses
in Large-Vocabulary Language Models", arXiv:2411.09009, measure the same for Gemma and Llama).

transformers' causal LMs take `logits_to_keep`, a 1-D tensor of sequence positions at which the head runs. The
collator wrapper below adds the positions t (of the shifted sequence) at which some row's token t+1 is a label,
and replaces `labels` with those targets, (B, 1 + K) behind an ignored column. `label_positions_loss` is the
Trainer's `compute_loss_func`: the summed cross-entropy over the (B, K, V) logits, divided by the number of label
tokens of the whole accumulated batch (the Trainer's `num_items_in_batch`), as transformers' own causal-LM loss
does. The loss and the gradients equal the full-logits ones (tests); only the work on positions without a label
is skipped.
"""
from __future__ import annotations

import inspect

import torch

from weitiao.data.encode import IGNORE_INDEX
from weitiao.methods import unwrapped


class LabelPositionsCollator:
    """Wraps a collator: `logits_to_keep` = positions predicting a trained token, `labels` = their targets."""

    def __init__(self, inner):
        self.inner = inner

    def __call__(self, features):
        batch = self.inner(features)
        target = batch["labels"][:, 1:]  # (B, T-1): position t predicts token t+1
        keep = (target != IGNORE_INDEX).any(dim=0).nonzero().squeeze(1)  # (K,)
        batch["logits_to_keep"] = keep
        # (B, 1 + K): the targets behind one ignored column, so that the Trainer, which counts a causal LM's label
        # tokens over labels[:, 1:] for the loss's divisor, counts exactly these
        ignored = torch.full_like(target[:, :1], IGNORE_INDEX)
        batch["labels"] = torch.cat([ignored, target[:, keep]], dim=1)
        return batch


def label_positions_loss(outputs, labels: torch.Tensor, num_items_in_batch=None) -> torch.Tensor:
    """Cross-entropy of (B, K, V) logits against the (B, 1 + K) labels' targets (after the ignored column):
    summed, then divided by the accumulated batch's label count."""
    logits = outputs["logits"] if isinstance(outputs, dict) else outputs[0]
    labels = labels[:, 1:]
    loss = torch.nn.functional.cross_entropy(logits.float().reshape(-1, logits.shape[-1]),
                                             labels.to(logits.device).reshape(-1), ignore_index=IGNORE_INDEX,
                                             reduction="sum")
    count = num_items_in_batch if num_items_in_batch is not None else (labels != IGNORE_INDEX).sum()
    if torch.is_tensor(count):
        count = count.to(loss.device)
    return loss / count


def supports_logits_to_keep(model) -> bool:
    """Whether the (unwrapped) model's forward takes a `logits_to_keep` tensor."""
    inner = unwrapped(model)
    return "logits_to_keep" in inspect.signature(type(inner).forward).parameters
