"""Full fine-tuning: every parameter is trained."""
from __future__ import annotations

from weitiao.config import MethodConfig


def apply(model, cfg: MethodConfig):
    for p in model.parameters():
        p.requires_grad_(True)
    return model
