"""Classification metrics from a confusion matrix: accuracy, macro-F1, per-class precision/recall/F1."""
from __future__ import annotations

import numpy as np
import torch

from weitiao.console import log
from weitiao.data.dataset import LabelledCollator


def confusion(golds: list[int], preds: list[int], n_classes: int) -> np.ndarray:
    """(n_classes, n_classes) counts; row = true class, column = predicted class."""
    matrix = np.zeros((n_classes, n_classes), dtype=np.int64)
    np.add.at(matrix, (np.asarray(golds, dtype=np.int64), np.asarray(preds, dtype=np.int64)), 1)
    return matrix


def classification_metrics(golds: list[int], preds: list[int], labels: list[str]) -> dict:
    """accuracy, macro_f1 (the unweighted mean of per-class F1, so every class counts the same), per class
    precision/recall/F1/support, and the confusion matrix. A class never predicted has precision 0; a class with
    no rows is left out of the macro mean (its F1 is undefined)."""
    m = confusion(golds, preds, len(labels))
    true_pos = np.diag(m).astype(float)
    predicted, support = m.sum(axis=0).astype(float), m.sum(axis=1).astype(float)
    precision = np.divide(true_pos, predicted, out=np.zeros_like(true_pos), where=predicted > 0)
    recall = np.divide(true_pos, support, out=np.zeros_like(true_pos), where=support > 0)
    denom = precision + recall
    f1 = np.divide(2 * precision * recall, denom, out=np.zeros_like(true_pos), where=denom > 0)
    present = support > 0
    return {
        "accuracy": float(true_pos.sum() / max(m.sum(), 1)),
        "macro_f1": float(f1[present].mean()) if present.any() else 0.0,
        "per_class": {label: {"precision": round(float(precision[i]), 6), "recall": round(float(recall[i]), 6),
                              "f1": round(float(f1[i]), 6), "support": int(support[i])}
                      for i, label in enumerate(labels)},
        "confusion": m.tolist(),
    }


def balanced_class_weights(counts: list[int]) -> list[float]:
    """n / (k x n_c) per class c (sklearn's 'balanced'): each class then carries the same total weight."""
    total, k = sum(counts), len(counts)
    return [total / (k * c) if c else 0.0 for c in counts]


def plot_confusion(matrix: list[list[int]], labels: list[str], path, title: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    m = np.asarray(matrix)
    size = 1.2 + 0.6 * len(labels)
    fig, ax = plt.subplots(figsize=(size + 1.5, size), dpi=100)
    image = ax.imshow(m, cmap="Blues")
    ax.set_xticks(range(len(labels)), labels, rotation=45, ha="right")
    ax.set_yticks(range(len(labels)), labels)
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    for i in range(m.shape[0]):
        for j in range(m.shape[1]):
            ax.text(j, i, str(m[i, j]), ha="center", va="center",
                    color="white" if m[i, j] > m.max() / 2 else "black")
    ax.set_title(title)
    fig.colorbar(image, ax=ax, fraction=0.046)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


@torch.no_grad()
def score_classes(model, tokenizer, encoded: list[dict], labels: list[str], batch_size: int, amp_dtype,
                  label: str) -> dict:
    """Loss (unweighted mean cross-entropy), accuracy, macro-F1 and the confusion matrix on `encoded`."""
    model.eval()
    device = next(model.parameters()).device
    collate = LabelledCollator(tokenizer)
    predictions, loss_sum = [], 0.0
    for start in range(0, len(encoded), batch_size):
        batch = collate([dict(e) for e in encoded[start:start + batch_size]]).to(device)
        gold = batch.pop("labels")
        with torch.autocast(device.type, dtype=amp_dtype, enabled=amp_dtype is not None):
            logits = model(**batch).logits.float()  # (B, n_classes)
        loss_sum += torch.nn.functional.cross_entropy(logits, gold, reduction="sum").item()
        predictions += logits.argmax(-1).tolist()
    golds = [e["labels"] for e in encoded]
    scores = classification_metrics(golds, predictions, labels)
    metrics = {"loss": round(loss_sum / len(encoded), 6), "accuracy": round(scores["accuracy"], 6),
               "macro_f1": round(scores["macro_f1"], 6)}
    log(f"[{label}] {len(encoded)} rows: " + ", ".join(f"{k} {v:.4f}" for k, v in metrics.items()))
    return {"metrics": metrics, "predictions": predictions, "confusion": scores["confusion"],
            "per_class": scores["per_class"]}
