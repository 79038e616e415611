"""P-tuning, v1 (Liu et al. 2021, "GPT Understands, Too", arXiv:2103.10385) via peft.

Like prompt tuning, virtual token embeddings (num_virtual_tokens, hidden) go in front of the input, but they are the
output of a trained prompt encoder (an MLP, or the paper's bidirectional LSTM + MLP) over learned inputs, which
couples the virtual tokens and trains more stably. The encoder's output is what a reloaded adapter uses.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from weitiao.methods.protocol import Method, MethodConfig
from weitiao.methods.prefix import check_architecture
from weitiao.settings import doc



@dataclass
class PTuningSettings:
    num_virtual_tokens: int = doc("Virtual tokens produced by the prompt encoder.", 16)
    encoder: Literal["mlp", "lstm"] = doc("Prompt encoder that produces the virtual token embeddings.", "mlp")
    encoder_hidden: int = doc("Hidden width of the prompt encoder.", 256)

    def problems(self, where: str = "method.ptuning") -> list[str]:
        return [] if self.num_virtual_tokens >= 1 else [f"{where}.num_virtual_tokens: must be at least 1"]


def apply(model, cfg: MethodConfig, gradient_checkpointing: bool = False):
    from peft import PromptEncoderConfig, PromptEncoderReparameterizationType, TaskType, get_peft_model

    check_architecture(model, "ptuning")
    pc = cfg.ptuning
    encoder = {"mlp": PromptEncoderReparameterizationType.MLP, "lstm": PromptEncoderReparameterizationType.LSTM}
    config = PromptEncoderConfig(task_type=TaskType.CAUSAL_LM, num_virtual_tokens=pc.num_virtual_tokens,
                                 encoder_reparameterization_type=encoder[pc.encoder],
                                 encoder_hidden_size=pc.encoder_hidden)
    return get_peft_model(model, config)


METHOD = Method("ptuning", apply, help="is P-tuning (v1)", section_help="Settings of `ptuning`.", saves="adapter",
                section="ptuning", settings_type=PTuningSettings, virtual_tokens=True)
