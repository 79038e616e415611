"""Full fine-tuning: every parameter is trained."""
from __future__ import annotations

from typing import TYPE_CHECKING

from weitiao.methods.protocol import Method

if TYPE_CHECKING:  # annotations only: config imports the methods for their settings
    from weitiao.config import MethodConfig


def apply(model, cfg: MethodConfig, gradient_checkpointing: bool = False):
    for p in model.parameters():
        p.requires_grad_(True)
    return model


METHOD = Method("full", apply)
