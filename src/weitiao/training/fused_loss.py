"""The LM head and the cross-entropy in one chunked pass (`train.fused_loss`): the logits never exist whole.

A causal LM's loss needs, for every trained position, log-softmax over the vocabulary of `hidden @ W_head^T`. Done
the usual way that is a (B, T, V) logits tensor, an fp32 copy of it for the loss, and in backward a gradient of the
same size: for Llama 3 (V = 128,256) at 2 x 2048 tokens, 2 GiB per fp32 copy, the largest activation of the run,
and for a small model with a big vocabulary (SmolLM2-135M: V x d = 49,152 x 576) most of its activation memory.

`linear_cross_entropy` takes the final hidden states at the trained positions only, (M, d), and walks them in
chunks of `chunk` rows: for each it computes the (chunk, V) logits in fp32, the summed loss, and at once the
gradient of the loss with respect to the logits, softmax - onehot, which it turns straight into the gradients of
the hidden states, (chunk, d), and, when the head is trained, of the head's weight, (V, d). Backward then only
scales those by the incoming gradient. This is the scheme of Liger Kernel's fused linear cross-entropy (Hsu et al.
2024, arXiv:2410.10989) and close to Cut Cross-Entropy (Wijmans et al. 2024, arXiv:2411.09009), written in plain
torch: memory for the loss is one chunk's logits, (chunk, V) x 4 bytes twice at most, instead of (B, T, V) several
times; the FLOPs are those of the usual head and loss (the backward's matmuls simply run during forward).

`FusedLinearLoss` plugs it into transformers' Trainer without changing the model: a forward hook on the decoder
keeps its output (B, T, d), the collator asks the model for logits at no position (`logits_to_keep` = an empty
index tensor, so the head runs on (B, 0, d)), and the Trainer's `compute_loss_func` computes the loss from the kept
hidden states, divided by the accumulated batch's label count (`num_items_in_batch`) as transformers' own loss is.
`usable` checks on the loaded model, with two tokens, that the head applied to the decoder's output reproduces the
model's logits: a model that scales or soft-caps its logits (Gemma 2, Cohere) fails it and keeps the usual loss.
"""
from __future__ import annotations

import torch

from weitiao.data.encode import IGNORE_INDEX
from weitiao.methods import unwrapped


class _LinearCrossEntropy(torch.autograd.Function):
    """sum over rows of CE(hidden @ weight^T, target); gradients computed in forward, chunk by chunk."""

    @staticmethod
    def forward(ctx, hidden, weight, targets, chunk: int):
        # hidden (M, d), weight (V, d), targets (M,) all valid (no ignored rows)
        # the loss and softmax in fp32 at least (fp64 inputs stay fp64)
        fp = torch.promote_types(torch.promote_types(hidden.dtype, weight.dtype), torch.float32)
        loss = torch.zeros((), dtype=fp, device=hidden.device)
        grad_hidden = torch.empty_like(hidden) if ctx.needs_input_grad[0] else None
        grad_weight = torch.zeros(weight.shape, dtype=fp, device=weight.device) if ctx.needs_input_grad[1] else None
        for start in range(0, hidden.shape[0], chunk):
            h, t = hidden[start:start + chunk], targets[start:start + chunk]
            logits = (h @ weight.t()).to(fp)  # (c, V)
            lse = torch.logsumexp(logits, dim=-1)  # (c,)
            loss += (lse - logits.gather(1, t[:, None]).squeeze(1)).sum()
            if grad_hidden is None and grad_weight is None:
                continue
            # d loss / d logits = softmax - onehot(target), in place over the logits: no second (c, V) buffer
            grad_logits = logits.sub_(lse[:, None]).exp_()
            grad_logits[torch.arange(t.shape[0], device=t.device), t] -= 1
            grad_logits = grad_logits.to(weight.dtype)
            if grad_hidden is not None:
                grad_hidden[start:start + chunk] = (grad_logits @ weight).to(hidden.dtype)  # (c, d)
            if grad_weight is not None:
                grad_weight += grad_logits.t() @ h.to(weight.dtype)  # (V, d)
        ctx.save_for_backward(grad_hidden, grad_weight)
        ctx.weight_dtype = weight.dtype
        return loss

    @staticmethod
    def backward(ctx, grad_loss):
        grad_hidden, grad_weight = ctx.saved_tensors
        dh = grad_hidden * grad_loss.to(grad_hidden.dtype) if grad_hidden is not None else None
        dw = (grad_weight * grad_loss).to(ctx.weight_dtype) if grad_weight is not None else None
        return dh, dw, None, None


def linear_cross_entropy(hidden: torch.Tensor, weight: torch.Tensor, targets: torch.Tensor,
                         chunk: int = 1024) -> torch.Tensor:
    """Summed cross-entropy of `hidden @ weight^T` (hidden (M, d), weight (V, d)) against `targets` (M,); rows whose
    target is IGNORE_INDEX are skipped. Never holds more than (chunk, V) logits."""
    keep = targets != IGNORE_INDEX
    if not bool(keep.all()):
        hidden, targets = hidden[keep], targets[keep]
    return _LinearCrossEntropy.apply(hidden, weight, targets, max(1, int(chunk)))


class FusedLinearLoss:
    """The Trainer's `compute_loss_func`: chunked linear cross-entropy from the decoder's kept output."""

    def __init__(self, model, chunk: int = 1024):
        inner = unwrapped(model)
        self.head = inner.get_output_embeddings()
        self.chunk = chunk
        self._hidden = None
        self._hook = inner.get_decoder().register_forward_hook(self._keep)

    def _keep(self, module, args, output):
        self._hidden = output[0] if isinstance(output, tuple) else output.last_hidden_state  # (B, T, d)

    def __call__(self, outputs, labels: torch.Tensor, num_items_in_batch=None) -> torch.Tensor:
        hidden, self._hidden = self._hidden, None
        # position t predicts token t + 1: (B, T-1, d) against (B, T-1)
        targets = labels[:, 1:].to(hidden.device)
        hidden = hidden[:, :-1]
        mask = targets != IGNORE_INDEX
        loss = linear_cross_entropy(hidden[mask], self.head.weight, targets[mask], self.chunk)
        count = num_items_in_batch if num_items_in_batch is not None else mask.sum()
        if torch.is_tensor(count):
            count = count.to(loss.device)
        return loss / count

    def remove(self) -> None:
        self._hook.remove()


class NoLogitsCollator:
    """Wraps a collator: the model computes logits at no position (the fused loss computes its own)."""

    def __init__(self, inner):
        self.inner = inner

    def __call__(self, features):
        batch = self.inner(features)
        batch["logits_to_keep"] = torch.empty(0, dtype=torch.long)
        return batch


def usable(model) -> bool:
    """Whether the head applied to the decoder's output gives the model's logits (no scaling or soft-capping after
    the head, a head without bias), checked on two tokens; and whether the model takes `logits_to_keep`."""
    from weitiao.training.label_logits import supports_logits_to_keep

    inner = unwrapped(model)
    try:
        head, decoder = inner.get_output_embeddings(), inner.get_decoder()
    except (AttributeError, NotImplementedError):
        return False
    if head is None or getattr(head, "bias", None) is not None or not supports_logits_to_keep(model) \
            or not isinstance(getattr(head, "weight", None), torch.Tensor):
        return False
    ids = torch.tensor([[1, 2]], device=head.weight.device)
    kept = []
    hook = decoder.register_forward_hook(
        lambda m, a, out: kept.append(out[0] if isinstance(out, tuple) else out.last_hidden_state))
    try:
        with torch.no_grad():
            logits = model(input_ids=ids).logits
    finally:
        hook.remove()
    if len(kept) != 1:
        return False
    with torch.no_grad():
        mine = kept[0] @ head.weight.t()
    return mine.shape == logits.shape and torch.allclose(mine.float(), logits.float(), rtol=1e-3, atol=1e-3)
