"""task: regress on a tiny BERT encoder and a tiny Llama decoder: a one-output head learns numeric labels with mean
squared error; the scores before and after, the per-row predictions, the report; and the errors a bad label or
metric gets. The bundled MiniLM's numbers: docs/guides/classification.md."""
from __future__ import annotations

import json

import pytest
import yaml

from conftest import run_cli
from weitiao.api import evaluate
from weitiao.config import load_config
from weitiao.demo import review_scores, write_split_files
from weitiao.errors import ConfigError
from weitiao.evaluation.regression import regression_metrics
from weitiao.testing import save_tiny_encoder
from weitiao.workflows import regress


@pytest.fixture(scope="module")
def scores_dir(tmp_path_factory):
    folder = tmp_path_factory.mktemp("review-scores")
    write_split_files(folder, review_scores.build_splits(0, {"train": 64, "val": 8, "test": 16}))
    return folder


def regress_config(path, model_dir, data_dir, out_dir, **sections):
    cfg = {
        "task": "regress",
        "model": {"name_or_path": str(model_dir)},
        "data": {"format": "labelled", "train": str(data_dir / "train.jsonl"), "val": str(data_dir / "val.jsonl"),
                 "test": str(data_dir / "test.jsonl"), "max_length": 64},
        "method": {"name": "full"},
        "train": {"epochs": 4, "batch_size": 8, "learning_rate": 1e-2, "eval_steps": 8, "logging_steps": 2,
                  "precision": "fp32"},
        "eval": {"metrics": ["mse", "spearman"], "generation": {"batch_size": 16}},
        "output": {"dir": str(out_dir)},
    }
    for section, values in sections.items():
        cfg.setdefault(section, {}).update(values)
    path.write_text(yaml.safe_dump(cfg))
    return path


@pytest.mark.parametrize("arch,method", [("bert", "full"), ("llama", "lora")])
def test_a_one_output_head_learns_the_scores(tmp_path, scores_dir, tiny_model_dir, tmp_path_factory, arch, method):
    model_dir = save_tiny_encoder(tmp_path_factory.mktemp("tiny-bert")) if arch == "bert" else tiny_model_dir
    method_section = {"name": "lora", "lora": {"r": 4, "alpha": 8}} if method == "lora" else {"name": "full"}
    cfg = regress_config(tmp_path / "c.yaml", model_dir, scores_dir, tmp_path / "run", method=method_section)
    result = regress.run(load_config(cfg))
    test = result.metrics["test"]
    assert set(test["tuned"]) == {"mse", "mae", "pearson", "spearman"} and test["rows"] == 16
    # the untrained head predicts about 0 for labels between 1 and 5; training moves it to the labels
    assert test["tuned"]["mse"] < test["base"]["mse"] / 4, test
    rows = [json.loads(line) for line in (tmp_path / "run" / "predictions.jsonl").read_text().splitlines()]
    assert len(rows) == 16 and all(isinstance(r["label"], float) and {"base", "tuned"} <= set(r) for r in rows)
    recomputed = regression_metrics([r["label"] for r in rows], [r["tuned"] for r in rows])
    assert recomputed["mse"] == pytest.approx(test["tuned"]["mse"], abs=1e-3)
    assert (tmp_path / "run" / "scores.png").stat().st_size > 1000
    report = json.loads((tmp_path / "run" / "report" / "report.json").read_text())
    assert {m["name"] for m in report["metrics"]} >= {"squared_error", "absolute_error"}
    again = evaluate(tmp_path / "run", split="test")  # `weitiao eval RUN`: the saved head scores the same
    assert again["metrics"]["mse"] == pytest.approx(test["tuned"]["mse"], abs=1e-4)
    assert again["predictions"] == [pytest.approx(r["tuned"], abs=1e-3) for r in rows]


def test_a_label_that_is_not_a_number_and_a_classification_metric_are_refused(tmp_path, scores_dir, tiny_model_dir):
    bad = tmp_path / "bad"
    bad.mkdir()
    rows = (scores_dir / "train.jsonl").read_text().splitlines()
    rows[3] = json.dumps({"text": "Review of the kettle: The price is good.", "label": "great"})
    rows[5] = json.dumps({"text": "Review of the kettle: The price is bad.", "label": "nan"})
    (bad / "train.jsonl").write_text("\n".join(rows) + "\n")
    cfg = regress_config(tmp_path / "c.yaml", tiny_model_dir, scores_dir, tmp_path / "run",
                         data={"train": str(bad / "train.jsonl")})
    proc = run_cli("train", cfg)
    assert proc.returncode == 2 and "Traceback" not in proc.stderr, proc.stderr[-2000:]
    assert "train.jsonl line 4: label 'great' is not a number (task regress learns a score)" in proc.stderr
    assert "train.jsonl line 6: label 'nan' is not a number" in proc.stderr
    assert not (tmp_path / "run").exists()

    with pytest.raises(ConfigError, match="eval.metrics\\[0\\]: task regress reports mse, mae, pearson, spearman"):
        load_config(regress_config(tmp_path / "m.yaml", tiny_model_dir, scores_dir, tmp_path / "run",
                                   eval={"metrics": ["accuracy"]}))


def test_regression_metrics_on_known_values():
    golds, preds = [1.0, 2.0, 3.0, 4.0], [1.5, 2.0, 2.5, 5.0]
    m = regression_metrics(golds, preds)
    assert m["mse"] == pytest.approx((0.25 + 0 + 0.25 + 1) / 4) and m["mae"] == pytest.approx(0.5)
    assert m["spearman"] == pytest.approx(1.0)  # the same order
    assert 0.9 < m["pearson"] < 1.0
    assert regression_metrics(golds, [3.0] * 4)["pearson"] is None  # a constant prediction has no correlation
