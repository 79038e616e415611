"""Batched generation: the frozen head gets a contiguous input (no broadcast copy of the head), same answers."""
from __future__ import annotations

import torch

from weitiao.config import GenerationConfig, MethodConfig
from weitiao.evaluation.generate import generate
from weitiao.methods import apply_method, unwrapped
from weitiao.testing import build_model


def test_the_frozen_head_sees_a_contiguous_input_and_answers_do_not_change(tiny_tokenizer):
    model = apply_method(build_model(len(tiny_tokenizer)), MethodConfig(name="lora"), False)  # base (and head) frozen
    head = unwrapped(model).get_output_embeddings()
    assert not head.weight.requires_grad
    # prompts of different lengths: left-padded into one (3, T) batch; the prefill keeps the last position only
    prompts = ["count: a b c", "count: a b c d e f g h", "count: a"]
    gen = GenerationConfig(max_new_tokens=5, batch_size=3)
    seen = []
    watch = head.register_forward_hook(lambda module, args, out: seen.append((args[0].shape, args[0].is_contiguous())))
    answers = generate(model, tiny_tokenizer, prompts, gen, (tiny_tokenizer.eos_token_id,))
    watch.remove()
    assert seen[0][0][:2] == (3, 1)  # the prefill's (B, 1, d) slice of the hidden states
    assert all(contiguous for _, contiguous in seen)
    assert not head._forward_pre_hooks  # the context's hook is gone afterwards

    # the same decoding without the hook (the head then gets the strided slice): the same answers
    side, tiny_tokenizer.padding_side = tiny_tokenizer.padding_side, "left"
    batch = tiny_tokenizer([prompts[1], prompts[0], prompts[2]], return_tensors="pt", padding=True,
                           add_special_tokens=False)
    with torch.no_grad():
        out = model.generate(**batch, max_new_tokens=5, do_sample=False, temperature=None, top_p=None, top_k=None,
                             eos_token_id=[tiny_tokenizer.eos_token_id], pad_token_id=tiny_tokenizer.pad_token_id)
    tiny_tokenizer.padding_side = side
    plain = [tiny_tokenizer.decode(row[batch["input_ids"].shape[1]:], skip_special_tokens=True).strip() for row in out]
    assert [answers[1], answers[0], answers[2]] == plain



def test_a_limit_shorter_than_the_references_is_said_before_generating(tiny_model_dir):
    """A Chinese JSON answer costs 2-3 tokens a character here: a limit that fits the English answers cuts it."""
    from transformers import AutoTokenizer

    from weitiao.evaluation.scoring import cut_short_warning

    tokenizer = AutoTokenizer.from_pretrained(tiny_model_dir)
    answers = ['{"姓名": "张三", "城市": "北京", "职业": "教师"}', "1. Oak\n2. Pine"]
    lengths = [len(tokenizer(a, add_special_tokens=False)["input_ids"]) + 1 for a in answers]
    assert lengths[0] > lengths[1]
    assert cut_short_warning(answers, tokenizer, lengths[0]) is None
    warning = cut_short_warning(answers, tokenizer, lengths[1])
    assert warning.startswith("warning: 1 of 2 reference answers are longer than eval.generation.max_new_tokens")
    assert f"the longest: {lengths[0]} tokens" in warning and f"max_new_tokens={lengths[0]}" in warning
