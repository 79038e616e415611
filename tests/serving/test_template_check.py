"""The template round trip passes for a run's own template and catches a served template or stop token that
differs from training, showing both renderings."""
from __future__ import annotations

import re

import pytest

from weitiao.serving import template_check
from weitiao.serving.loaded import load
from weitiao.serving.template_check import PROBE, TemplateMismatch, check_round_trip


def test_round_trip_passes_for_the_runs_own_template(lora_run_dir):
    loaded = load(str(lora_run_dir), device="cpu")
    conversations = template_check.sample_conversations(loaded)
    assert len(conversations) == 5  # four test rows and the multi-turn probe
    assert check_round_trip(loaded.tokenizer, loaded.template, loaded.tokenizer, loaded.template.stop_ids,
                            conversations) == 5


def test_planted_prompt_mismatch_is_caught_with_both_renderings(lora_run_dir):
    loaded = load(str(lora_run_dir), device="cpu")
    served = _copy(loaded.tokenizer)
    # a server that adds a default system prompt the model never saw in training (Qwen-style templates do)
    served.chat_template = ("{% if messages[0]['role'] != 'system' %}{{ '<|im_start|>system\\nYou are helpful."
                            "<|im_end|>\\n' }}{% endif %}" + loaded.template.jinja)
    with pytest.raises(TemplateMismatch) as err:
        check_round_trip(loaded.tokenizer, loaded.template, served, loaded.template.stop_ids, [PROBE[1:]])
    message = str(err.value)
    assert re.search(r"differs from training at token \d+ \(training id \d+, served id \d+\)", message)
    assert "training renders: '<|im_start|>user\\nName 3 colours." in message
    assert "served renders:   '<|im_start|>system\\nYou are helpful." in message


def test_planted_stop_token_mismatch_is_caught(lora_run_dir):
    loaded = load(str(lora_run_dir), device="cpu")
    eos_only = [loaded.tokenizer.convert_tokens_to_ids("<|endoftext|>")]
    with pytest.raises(TemplateMismatch, match=r"ends the answer with \['<\|im_end\|>'\], but the server stops on "
                                               r"\['<\|endoftext\|>'\]"):
        check_round_trip(loaded.tokenizer, loaded.template, loaded.tokenizer, eos_only, [PROBE])


def test_served_tokenizer_without_template_is_refused(lora_run_dir):
    loaded = load(str(lora_run_dir), device="cpu")
    served = _copy(loaded.tokenizer)
    served.chat_template = None
    with pytest.raises(TemplateMismatch, match="no chat_template"):
        check_round_trip(loaded.tokenizer, loaded.template, served, loaded.template.stop_ids, [PROBE])


def _copy(tokenizer):
    import copy

    return copy.deepcopy(tokenizer)
