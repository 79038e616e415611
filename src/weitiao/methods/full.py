"""Full fine-tuning: every parameter is trained."""
from __future__ import annotations

from weitiao.config import MethodConfig
from weitiao.methods.protocol import Method


def apply(model, cfg: MethodConfig, gradient_checkpointing: bool = False):
    for p in model.parameters():
        p.requires_grad_(True)
    return model


METHOD = Method("full", apply)
