"""`weitiao compare RUN [OTHER]`: base vs tuned of one run, or two runs, on the same test rows, from what the runs
wrote (no model is loaded). The stage is one call: the report itself is made in `evaluation.compare`, which
`weitiao train` also calls at its end (eval.report)."""
from __future__ import annotations

from weitiao.evaluation.compare import run

__all__ = ["run"]
