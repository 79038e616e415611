"""The fused, chunked head-and-loss pass: the same loss and gradients as the usual full-logits loss."""
from __future__ import annotations

import pytest
import torch

from weitiao.data.dataset import PadCollator, PaddingFreeCollator
from weitiao.training import fused_loss
from weitiao.training.fused_loss import FusedLinearLoss, NoLogitsCollator, linear_cross_entropy


@pytest.mark.parametrize("weight_grad", [False, True], ids=["frozen_head", "trained_head"])
def test_linear_cross_entropy_equals_torch_cross_entropy(weight_grad):
    """20 rows in chunks of 6 (the last one short), 4 of them ignored: loss and both gradients as
    F.cross_entropy over the whole (20, V) logits gives them."""
    torch.manual_seed(0)
    hidden = torch.randn(20, 16, dtype=torch.float64, requires_grad=True)
    weight = torch.randn(50, 16, dtype=torch.float64, requires_grad=weight_grad)
    targets = torch.randint(0, 50, (20,))
    targets[[0, 3, 7, 19]] = -100
    ours = linear_cross_entropy(hidden, weight, targets, chunk=6)
    (ours * 0.5).backward()  # a non-unit upstream gradient, as a loss scaled for accumulation is
    got = (hidden.grad.clone(), weight.grad.clone() if weight_grad else None)
    hidden.grad = None
    weight.grad = None
    theirs = torch.nn.functional.cross_entropy(hidden @ weight.t(), targets, ignore_index=-100, reduction="sum")
    (theirs * 0.5).backward()
    assert ours.item() == pytest.approx(theirs.item(), rel=1e-12)
    assert torch.allclose(got[0], hidden.grad, rtol=1e-10, atol=1e-12)
    assert got[0][[0, 3, 7, 19]].abs().max() == 0  # ignored rows get no gradient
    if weight_grad:
        assert torch.allclose(got[1], weight.grad, rtol=1e-10, atol=1e-12)


def test_no_gradients_are_computed_without_autograd():
    hidden, weight = torch.randn(8, 4, requires_grad=True), torch.randn(10, 4, requires_grad=True)
    with torch.no_grad():
        loss = linear_cross_entropy(hidden, weight, torch.arange(8), chunk=3)
    assert not loss.requires_grad
    expected = torch.nn.functional.cross_entropy(hidden @ weight.t(), torch.arange(8), reduction="sum")
    assert loss.item() == pytest.approx(expected.item(), rel=1e-5)


@pytest.mark.parametrize("packed", [False, True], ids=["padded", "padding_free"])
@pytest.mark.parametrize("arch", ["llama", "glm4"])
def test_fused_loss_and_gradients_equal_the_models_own(tiny_tokenizer, arch, packed):
    """Three rows whose answers sit at different places, num_items_in_batch as the Trainer gives it, chunks of 5
    positions: transformers' loss over every position's logits against the fused loss. The tied head (llama) and
    the untied one (glm4) are trained, so the head's gradient is checked too."""
    from weitiao.testing import build_model

    model = build_model(len(tiny_tokenizer), arch=arch).double()
    assert fused_loss.usable(model)
    rows = [{"input_ids": list(range(5, 5 + n)), "labels": [-100] * p + list(range(5 + p, 5 + n))}
            for n, p in ((7, 3), (12, 9), (20, 5))]
    inner = PaddingFreeCollator() if packed else PadCollator(tiny_tokenizer.pad_token_id)
    n_items = torch.tensor(40)  # as if other micro-batches of the same optimizer step held more labels
    loss_func = FusedLinearLoss(model, chunk=5)
    losses, grads = [], []
    for own in (False, True):
        model.zero_grad()
        batch = dict(NoLogitsCollator(inner)(rows) if own else inner(rows))
        if own:
            labels = batch.pop("labels")
            outputs = model(**batch)
            assert outputs.logits.shape[1] == 0  # the model itself computed no logits
            loss = loss_func(outputs, labels, num_items_in_batch=n_items)
        else:
            loss = model(**batch, num_items_in_batch=n_items).loss
        loss.backward()
        losses.append(loss.item())
        grads.append({n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None})
    loss_func.remove()
    # transformers' loss upcasts the logits to fp32 (`.float()`), here from fp64: agreement to fp32's precision
    assert losses[0] == pytest.approx(losses[1], rel=1e-6)
    assert grads[0].keys() == grads[1].keys()
    for name in grads[0]:
        assert torch.allclose(grads[0][name], grads[1][name], rtol=1e-5, atol=1e-8), name


def test_a_model_that_changes_its_logits_after_the_head_is_not_fused():
    """Gemma 2 soft-caps its logits (tanh(x / 30) x 30): the head applied to the decoder's output is not the
    model's logits, so the check refuses it and the run keeps the usual loss. The same model without the cap passes."""
    import transformers

    def gemma2(cap):
        torch.manual_seed(0)
        return transformers.Gemma2ForCausalLM(transformers.Gemma2Config(
            vocab_size=64, hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=2,
            num_key_value_heads=1, head_dim=16, final_logit_softcapping=cap, initializer_range=2.0))

    assert not fused_loss.usable(gemma2(0.5))
    assert fused_loss.usable(gemma2(None))
