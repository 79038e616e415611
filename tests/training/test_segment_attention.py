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
from weitiao.training.causal_lm import segment_attention_used


def _rows(lengths):
    return [{"input_ids": list(range(5, 5 + n)), "labels": list(range(5, 5 + n))} for n in lengths]


def test_short_examples_in_fp32_keep_the_masked_rows_loss_under_bf16_autocast(tiny_tokenizer):
    """On a CPU under bf16 autocast, examples shorter than CPU_FP32_BELOW are attended in fp32 (faster there);
    the loss stays the masked row's within bf16 noise, and long examples take the bf16 kernel."""
    model = build_model(len(tiny_tokenizer))
    packed = PaddingFreeCollator()(_rows((9, 17, 30)))
    losses = []
    for segments in (False, True):
        with training_attention(model, segments), torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16):
            losses.append(model(**packed).loss.item())
    assert losses[1] == pytest.approx(losses[0], rel=2e-2)


def test_padded_batches_and_cached_decoding_go_to_sdpa_unchanged(tiny_tokenizer):
    """Without example boundaries (a padded batch with its mask) or with a KV cache (one new query against many
    keys), the function is transformers' sdpa: the same logits and the same generated tokens."""
    model = build_model(len(tiny_tokenizer)).eval()
    ids = torch.tensor([[5, 6, 7, 8, 9, 10], [11, 12, 13, 0, 0, 0]])
    mask = (ids != 0).long()
    results = []
    for segments in (False, True):
        with training_attention(model, segments), torch.no_grad():
            logits = model(input_ids=ids, attention_mask=mask, use_cache=False).logits
            tokens = model.generate(input_ids=ids[:1], max_new_tokens=5, do_sample=False)
        results.append((logits, tokens))
    assert torch.allclose(results[0][0], results[1][0], atol=1e-6)
    assert results[0][1].tolist() == results[1][1].tolist()


def test_boundaries_that_do_not_cover_the_row_are_an_error(tiny_tokenizer):
    model = build_model(len(tiny_tokenizer))
    row = PaddingFreeCollator()(_rows((4, 6)))
    row["cu_seq_lens_q"] = torch.tensor([0, 4, 8], dtype=torch.int32)  # the row holds 10 tokens
    with training_attention(model, True), pytest.raises(ValueError, match="cu_seq_lens_q ends at 8"):
        model(**row)


@pytest.mark.parametrize("choice, device, implementation, used", [
    ("auto", "cpu", "sdpa", True),
    ("auto", "cuda", "sdpa", False),       # a GPU keeps sdpa's masked row, or flash-attention's own varlen kernel
    ("segments", "cuda", "sdpa", True),
    ("mask", "cpu", "sdpa", False),
    ("segments", "cpu", "eager", False),   # only a model on sdpa is switched
])
def test_when_a_run_attends_one_example_at_a_time(tiny_tokenizer, choice, device, implementation, used):
    model = build_model(len(tiny_tokenizer))
    model.set_attn_implementation(implementation)
    cfg = Config()
    cfg.train.packed_attention = choice
    assert segment_attention_used(cfg, model, device) is used
    cfg.train.padding_free = False
    assert segment_attention_used(cfg, model, device) is False


def test_the_switch_is_undone_even_when_training_fails(tiny_tokenizer):
    model = build_model(len(tiny_tokenizer))
    with pytest.raises(RuntimeError), training_attention(model, True):
        assert model.config._attn_implementation == NAME and segment_attention.usable(model) is False
        raise RuntimeError("a failed step")
    assert model.config._attn_implementation == "sdpa" and segment_attention.usable(model)
