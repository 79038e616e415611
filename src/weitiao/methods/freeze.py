"""Freeze tuning: train only the last N decoder layers (plus the final norm) and named modules.

Backward stops at the lowest trainable layer, so this is much cheaper than full fine-tuning (2.7x faster for the
last 2 of SmolLM2's 30 layers on this CPU). Note that models with tied embeddings share one matrix between the
input embeddings and the LM head: naming `lm_head` trains the embeddings too.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

import fnmatch

from weitiao.errors import WeitiaoError
from weitiao.methods.protocol import Method, MethodConfig
from weitiao.settings import doc

if TYPE_CHECKING:  # annotations only
    from torch import nn


@dataclass
class FreezeSettings:
    last_layers: int = doc("Train the last N decoder layers (and the final norm); everything else is frozen.", 2)
    modules: list[str] = doc(
        "Also train modules whose name matches one of these glob patterns, e.g. `[lm_head, '*.mlp.*']`.",
        default_factory=list,
    )

    def problems(self, where: str = "method.freeze") -> list[str]:
        if self.last_layers < 0:
            return [f"{where}.last_layers: must not be negative, got {self.last_layers}"]
        if self.last_layers == 0 and not self.modules:
            return [f"{where}: trains nothing; set last_layers > 0 or list modules"]
        return []


def decoder_layers(model) -> tuple[str, nn.ModuleList]:
    """The model's stack of decoder blocks: the longest ModuleList (e.g. `model.layers` in Llama/GLM)."""
    from torch import nn

    best = max(((n, m) for n, m in model.named_modules() if isinstance(m, nn.ModuleList)),
               key=lambda nm: len(nm[1]), default=None)
    if best is None:
        raise WeitiaoError("freeze: cannot find the decoder layers of this model")
    return best


def final_norm(model, layers_name: str):
    """The norm applied after the last decoder layer (a sibling of the layer list whose name ends in 'norm')."""
    parent = layers_name.rsplit(".", 1)[0] if "." in layers_name else ""
    for name, module in model.named_modules():
        head, _, leaf = name.rpartition(".")
        if head == parent and "norm" in leaf.lower():
            return module
    return None


def apply(model, cfg: MethodConfig, gradient_checkpointing: bool = False):
    fc = cfg.freeze
    for p in model.parameters():
        p.requires_grad_(False)
    layers_name, layers = decoder_layers(model)
    if fc.last_layers > len(layers):
        raise WeitiaoError(f"method.freeze.last_layers: {fc.last_layers} is more than the model's "
                           f"{len(layers)} layers")
    if fc.last_layers > 0:
        for block in list(layers)[-fc.last_layers:]:
            for p in block.parameters():
                p.requires_grad_(True)
        norm = final_norm(model, layers_name)
        if norm is not None:
            for p in norm.parameters():
                p.requires_grad_(True)
    for pattern in fc.modules:
        matched = [m for n, m in model.named_modules() if n and fnmatch.fnmatch(n, pattern)]
        if not matched:
            raise WeitiaoError(f"method.freeze.modules: pattern {pattern!r} matches no module of this model")
        for module in matched:
            for p in module.parameters():
                p.requires_grad_(True)
    return model


METHOD = Method("freeze", apply, help="trains the layers `method.freeze` names, the rest frozen",
                section_help="Settings of `freeze`.", section="freeze", settings_type=FreezeSettings,
                checked_unless_chosen=False)  # its defaults train nothing: checked only when chosen
