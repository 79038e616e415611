"""weitiao's one-call-per-example attention for padding-free rows (training.segment_attention). Its loss and
gradients equal the padded batch's in tests/data/test_dataset.py; here: what it hands to transformers' sdpa, bf16,
and when a run uses it."""
from __future__ import annotations

import pytest
import torch

from weitiao.config import Config
from weitiao.data.dataset import PaddingFreeCollator
from weitiao.testing import build_model
from weitiao.training import segment_attention
from weitiao.training.segment_attention import NAME, training_attention
from weitiao.training.causal_lm import packed_attention


def _rows(lengths):
    return [{"input_ids": list(range(5, 5 + n)), "labels": list(range(5, 5 + n))} for n in lengths]


def test_short_examples_in_fp32_keep_the_masked_rows_loss_under_bf16_autocast(tiny_tokenizer):
    """On a CPU under bf16 autocast, examples shorter than CPU_FP32_BELOW are attended in fp32 (faster there);
    the loss stays the masked row's within bf16 noise, and long examples take the bf16 kernel."""
    model = build_model(len(tiny_tokenizer))
    packed = PaddingFreeCollator()(_rows((9, 17, 30)))
    losses = []
    for kind in (None, "segments"):
        with training_attention(model, kind), torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16):
            losses.append(model(**packed).loss.item())
    assert losses[1] == pytest.approx(losses[0], rel=2e-2)


def test_padded_batches_and_cached_decoding_go_to_sdpa_unchanged(tiny_tokenizer):
    """Without example boundaries (a padded batch with its mask) or with a KV cache (one new query against many
    keys), the function is transformers' sdpa: the same logits and the same generated tokens."""
    model = build_model(len(tiny_tokenizer)).eval()
    ids = torch.tensor([[5, 6, 7, 8, 9, 10], [11, 12, 13, 0, 0, 0]])
    mask = (ids != 0).long()
    results = []
    for kind in (None, "segments", "flex"):
        with training_attention(model, kind), torch.no_grad():
            logits = model(input_ids=ids, attention_mask=mask, use_cache=False).logits
            tokens = model.generate(input_ids=ids[:1], max_new_tokens=5, do_sample=False)
        results.append((logits, tokens))
    for logits, tokens in results[1:]:
        assert torch.allclose(results[0][0], logits, atol=1e-6)
        assert results[0][1].tolist() == tokens.tolist()


def test_boundaries_that_do_not_cover_the_row_are_an_error(tiny_tokenizer):
    model = build_model(len(tiny_tokenizer))
    row = PaddingFreeCollator()(_rows((4, 6)))
    row["cu_seq_lens_q"] = torch.tensor([0, 4, 8], dtype=torch.int32)  # the row holds 10 tokens
    with training_attention(model, "segments"), pytest.raises(ValueError, match="cu_seq_lens_q ends at 8"):
        model(**row)


@pytest.mark.parametrize("choice, device, implementation, flash, used", [
    ("auto", "cpu", "sdpa", True, "segments"),   # measured faster there (module docstring)
    ("auto", "cuda", "sdpa", False, "flex"),     # one kernel call per layer, only each example's blocks
    ("auto", "cuda", "sdpa", True, "flash"),     # flash-attn installed: its variable-length kernel
    ("flash", "cuda", "sdpa", False, "flex"),    # asked for but not installed
    ("flash", "cpu", "sdpa", True, "segments"),  # flash-attention runs on CUDA only
    ("segments", "cuda", "sdpa", False, "segments"),
    ("flex", "cpu", "sdpa", False, "segments"),  # torch has no FlexAttention backward on a CPU
    ("mask", "cpu", "sdpa", False, None),
    ("segments", "cpu", "eager", False, None),   # only a model on sdpa is switched
    ("auto", "cuda", "flash_attention_2", True, None),  # loaded with flash-attention: it reads the boundaries
])
def test_which_attention_packed_rows_train_under(tiny_tokenizer, choice, device, implementation, flash, used):
    model = build_model(len(tiny_tokenizer))
    model.config._attn_implementation = implementation  # what a load with that implementation records
    cfg = Config()
    cfg.train.packed_attention = choice
    assert packed_attention(cfg, model, device, flash_installed=flash) == used
    cfg.train.padding_free = False
    assert packed_attention(cfg, model, device, flash_installed=flash) is None


def test_the_switch_is_undone_even_when_training_fails(tiny_tokenizer):
    model = build_model(len(tiny_tokenizer))
    with pytest.raises(RuntimeError), training_attention(model, "segments"):
        assert model.config._attn_implementation == NAME and segment_attention.usable(model) is False
        raise RuntimeError("a failed step")
    assert model.config._attn_implementation == "sdpa" and segment_attention.usable(model)
