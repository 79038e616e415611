"""Full fine-tuning: every parameter is trained."""
from __future__ import annotations

from weitiao.methods.protocol import Method, MethodConfig



def apply(model, cfg: MethodConfig, gradient_checkpointing: bool = False):
    for p in model.parameters():
        p.requires_grad_(True)
    return model


METHOD = Method("full", apply, help="trains every weight")
