"""Checkpoints that resume prompt-learning adapters (prefix with projection, P-tuning) exactly.

peft saves a prompt-learning adapter as its *output*: the virtual tokens' embeddings, or for prefix tuning the
per-layer keys/values, (n_virtual, 2 x layers x kv_dim), already passed through the reparameterization MLP /
prompt encoder. That is all inference needs, but the trainable parameters are the encoder's. Loading such a file
back into the model being trained fails (prefix with projection: the shapes differ) or, worse, loads silently
wrong (P-tuning: the encoder's output becomes its input), and transformers' Trainer does exactly that when it
resumes or loads the best checkpoint.

So every checkpoint of these methods also holds `trainable_state.safetensors`, the trainable parameters by name,
and resuming and best-checkpoint loading read that file instead.
"""
from __future__ import annotations

import os
from pathlib import Path

from transformers import Trainer, TrainerCallback

TRAINABLE_STATE = "trainable_state.safetensors"


def save_trainable_state(model, folder: str | Path) -> None:
    from safetensors.torch import save_file

    state = {name: p.detach().contiguous().cpu() for name, p in model.named_parameters() if p.requires_grad}
    tmp = Path(folder) / (TRAINABLE_STATE + ".tmp")
    save_file(state, str(tmp))
    os.replace(tmp, Path(folder) / TRAINABLE_STATE)  # never a half-written file under the real name


def load_trainable_state(model, folder: str | Path) -> None:
    from safetensors.torch import load_file

    state = load_file(str(Path(folder) / TRAINABLE_STATE))
    params = dict(model.named_parameters())
    missing = [name for name, p in params.items() if p.requires_grad and name not in state]
    unknown = [name for name in state if name not in params]
    if missing or unknown:
        raise RuntimeError(f"{folder}: trainable state does not match the model (missing {missing[:3]}, "
                           f"unexpected {unknown[:3]})")
    for name, value in state.items():
        params[name].data.copy_(value)


class SaveTrainableState(TrainerCallback):
    """Write the trainable parameters into each checkpoint folder, right after the Trainer wrote it."""

    def on_save(self, args, state, control, model=None, **kwargs):
        folder = Path(args.output_dir) / f"checkpoint-{state.global_step}"
        if folder.is_dir():
            save_trainable_state(model, folder)
        return control


class PromptLearningTrainer(Trainer):
    """transformers' Trainer, except that model weights come back from `trainable_state.safetensors`."""

    def _load_from_checkpoint(self, resume_from_checkpoint, model=None):
        load_trainable_state(model if model is not None else self.model, resume_from_checkpoint)

    def _load_best_model(self):
        load_trainable_state(self.model, self.state.best_model_checkpoint)
