"""Scores of a regression head on held-out rows: mean squared and absolute error, Pearson's r (linear agreement)
and Spearman's rho (the same on ranks: does the model put the rows in the right order, whatever its scale)."""
from __future__ import annotations

import math

import torch

from weitiao.console import log
from weitiao.data.dataset import LabelledCollator

REGRESS_METRICS = ("mse", "mae", "pearson", "spearman")


def regression_metrics(golds: list[float], preds: list[float]) -> dict:
    """mse, mae, and the two correlations (None where a side is constant: a correlation is undefined there)."""
    from scipy.stats import pearsonr, spearmanr

    n = len(golds)
    out = {"mse": sum((p - g) ** 2 for g, p in zip(golds, preds)) / n,
           "mae": sum(abs(p - g) for g, p in zip(golds, preds)) / n}
    constant = len(set(golds)) < 2 or len(set(preds)) < 2
    for name, fn in (("pearson", pearsonr), ("spearman", spearmanr)):
        value = None if constant else float(fn(golds, preds)[0])
        out[name] = None if value is None or math.isnan(value) else value
    return out


@torch.no_grad()
def score_regression(model, tokenizer, encoded: list[dict], batch_size: int, amp_dtype, label: str) -> dict:
    """The head's predictions (B, 1) -> (B,) on `encoded`, and `regression_metrics` against their labels."""
    model.eval()
    device = next(model.parameters()).device
    collate = LabelledCollator(tokenizer, scores=True)
    predictions: list[float] = []
    for start in range(0, len(encoded), batch_size):
        batch = collate([dict(e) for e in encoded[start:start + batch_size]]).to(device)
        batch.pop("labels")
        with torch.autocast(device.type, dtype=amp_dtype, enabled=amp_dtype is not None):
            predictions += model(**batch).logits.float()[:, 0].tolist()
    scores = regression_metrics([e["labels"] for e in encoded], predictions)
    metrics = {k: (round(v, 6) if v is not None else None) for k, v in scores.items()}
    log(f"[{label}] {len(encoded)} rows: " + ", ".join(f"{k} {v:.4f}" if v is not None else f"{k} undefined"
                                                       for k, v in metrics.items()))
    return {"metrics": metrics, "predictions": predictions}


def plot_scores(golds: list[float], preds: dict[str, list[float]], path, title: str) -> None:
    """Predicted against true score, one series per model (base, tuned), with the diagonal."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(5, 5))
    for name, values in preds.items():
        ax.scatter(golds, values, s=12, alpha=0.6, label=name)
    low, high = min(golds), max(golds)
    ax.plot([low, high], [low, high], color="grey", linewidth=1)
    ax.set_xlabel("true score")
    ax.set_ylabel("predicted score")
    ax.set_title(title)
    ax.legend()
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
