"""A run killed with SIGKILL (at a random moment, and while a checkpoint is being written) resumes to the same
weights and losses as an uninterrupted run, here on runs of 12 steps. The full 10-kill version, on 24 steps, is
`python bench/kill_resume.py`."""
from __future__ import annotations

import sys

from conftest import REPO


def test_two_sigkills_resume_to_the_uninterrupted_result(tmp_path, capsys):
    sys.path.insert(0, str(REPO))
    try:
        from bench.kill_resume import main
    finally:
        sys.path.remove(str(REPO))
    code = main(["--kills", "2", "--seed", "1", "--steps", "12", "--workdir", str(tmp_path)])
    out = capsys.readouterr().out
    assert "trial 1: killed at checkpoint-" in out  # the second kill lands while a checkpoint is written
    assert code == 0 and "2/2 resumed runs matched" in out, out
