"""Prefix tuning (Li & Liang 2021, arXiv:2101.00190) and P-Tuning v2 (Liu et al. 2022, arXiv:2110.07602) via peft.

Every attention layer gets `num_virtual_tokens` trained key/value vectors in front of the real ones: per layer a
key and a value of shape (n_kv_heads, num_virtual_tokens, head_dim), i.e. 2 x layers x n_virtual x kv_dim
parameters in all. With `projection` (P-Tuning v2's `prefix_projection`, ChatGLM's recipe) the prefix is produced
by an embedding + 2-layer MLP while training, which trains more stably; saving stores only the MLP's output, so the
adapter has the same size either way.

peft's `generate()` drops the prefix when the KV cache is on; weitiao decodes these adapters with its own cached
loop (`weitiao.evaluation.virtual_tokens`), so the prefix is applied at every generated token.
"""
from __future__ import annotations

from dataclasses import dataclass
from weitiao.methods.protocol import Method, MethodConfig
from weitiao.errors import WeitiaoError
from weitiao.settings import doc



@dataclass
class PrefixSettings:
    num_virtual_tokens: int = doc("Trained key/value positions put in front of every layer (ChatGLM's `pre_seq_len`).",
                                  16)
    projection: bool = doc(
        "Reparameterize the prefix through a 2-layer MLP while training (P-Tuning v2's `prefix_projection`); only "
        "the MLP's output is saved.", False)
    projection_hidden: int = doc("Hidden width of that MLP.", 256)

    def problems(self, where: str = "method.prefix") -> list[str]:
        return [] if self.num_virtual_tokens >= 1 else [f"{where}.num_virtual_tokens: must be at least 1"]


def check_architecture(model, method: str) -> None:
    """Refuse, before training, a model whose attention cache weitiao cannot seed with virtual tokens."""
    import inspect

    config = model.config
    text = config.get_text_config() if hasattr(config, "get_text_config") else config
    instead = "use method lora (or qlora), which works on every architecture"
    if getattr(config, "is_encoder_decoder", False):
        raise WeitiaoError(f"method.name: {method} supports decoder-only models; {config.model_type} is an "
                           f"encoder-decoder model; {instead}")
    if getattr(config, "auto_map", None):
        raise WeitiaoError(f"method.name: {method} needs a model implemented in transformers itself; "
                           f"{config.model_type} runs remote code with its own cache layout (for ChatGLM/GLM-4 use "
                           f"the transformers-native checkpoints, e.g. THUDM/glm-4-9b-chat-hf); or {instead}")
    kinds = set(getattr(text, "layer_types", None) or ["full_attention"])
    if kinds != {"full_attention"}:
        raise WeitiaoError(f"method.name: {method} needs every layer to use full attention with a plain KV cache; "
                           f"{config.model_type} has layer types {sorted(kinds)}; {instead}")
    from peft.utils import TRANSFORMERS_MODELS_TO_PREFIX_TUNING_POSTPROCESS_MAPPING as special

    if method == "prefix" and config.model_type in special:
        raise WeitiaoError(f"method.name: prefix: {config.model_type} keeps its cache in a legacy layout that "
                           f"weitiao's decoder cannot seed; {instead}")
    params = inspect.signature(model.forward).parameters
    if "position_ids" not in params or not ({"cache", "past_key_values"} & set(params)):
        raise WeitiaoError(f"method.name: {method}: {type(model).__name__}.forward takes no position ids or KV "
                           f"cache, which decoding with virtual tokens needs; {instead}")


def apply(model, cfg: MethodConfig, gradient_checkpointing: bool = False):
    from peft import PrefixTuningConfig, TaskType, get_peft_model

    check_architecture(model, "prefix")
    pc = cfg.prefix
    config = PrefixTuningConfig(task_type=TaskType.CAUSAL_LM, num_virtual_tokens=pc.num_virtual_tokens,
                                prefix_projection=pc.projection, encoder_hidden_size=pc.projection_hidden)
    model = get_peft_model(model, config)
    if not pc.projection:
        # peft draws the prefix keys/values from N(0, 1) (nn.Embedding's default), far larger than a model's own
        # keys and values: on SmolLM2 the first step's loss is 5.9 instead of the base model's 1.35, and training
        # spends its steps undoing that. Starting small (std 0.02, the usual init scale) starts from the base model.
        import torch

        with torch.no_grad():
            for encoder in model.prompt_encoder.values():
                encoder.embedding.weight.normal_(0.0, 0.02)
    return model


METHOD = Method("prefix", apply, help="is prefix tuning / P-Tuning v2", section_help="Settings of `prefix`.",
                saves="adapter", section="prefix", settings_type=PrefixSettings, virtual_tokens=True)
