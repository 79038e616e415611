"""Prompt tuning (Lester et al. 2021, arXiv:2104.08691) via peft.

Trains `num_virtual_tokens` input embeddings, (num_virtual_tokens, hidden), put in front of every input; nothing
inside the model changes. Initialising them from a text's token embeddings (`init_text`, e.g. a description of the
task) starts training from a meaningful prompt and converges faster than a random start.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

from weitiao.methods.protocol import Method, MethodConfig
from weitiao.methods.prefix import check_architecture
from weitiao.settings import doc



@dataclass
class PromptSettings:
    num_virtual_tokens: int = doc("Trained soft-prompt embeddings put in front of the input.", 16)
    init_text: Optional[str] = doc(
        "Initialise the soft prompt from this text's token embeddings (repeated or cut to `num_virtual_tokens`); "
        "empty: random.", None)

    def problems(self, where: str = "method.prompt") -> list[str]:
        return [] if self.num_virtual_tokens >= 1 else [f"{where}.num_virtual_tokens: must be at least 1"]


def apply(model, cfg: MethodConfig, gradient_checkpointing: bool = False):
    from peft import PromptTuningConfig, PromptTuningInit, TaskType, get_peft_model

    check_architecture(model, "prompt")
    pc = cfg.prompt
    extra = {}
    if pc.init_text:
        # peft tokenizes the text with the tokenizer of the folder the model was loaded from
        extra = dict(prompt_tuning_init=PromptTuningInit.TEXT, prompt_tuning_init_text=pc.init_text,
                     tokenizer_name_or_path=model.name_or_path)
    config = PromptTuningConfig(task_type=TaskType.CAUSAL_LM, num_virtual_tokens=pc.num_virtual_tokens, **extra)
    return get_peft_model(model, config)


METHOD = Method("prompt", apply, help="is prompt tuning", section_help="Settings of `prompt`.", saves="adapter",
                section="prompt", settings_type=PromptSettings, virtual_tokens=True)
