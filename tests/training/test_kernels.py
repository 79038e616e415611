"""Which kernels a run trains with (training.kernels): Liger's on a CUDA GPU where they run, transformers' modules
and weitiao's fused loss everywhere else, and an error naming every reason when Liger is required but cannot run.
Liger's kernels themselves need a GPU and Triton: bench/gpu_session.sh runs them."""
from __future__ import annotations

import pytest

from weitiao.errors import WeitiaoError
from weitiao.training.kernels import plan


def test_auto_takes_liger_only_where_it_runs():
    ready = dict(device="cuda", model_type="llama", virtual_tokens=False, installed=True, covered=True)
    chosen = plan("auto", **ready)
    assert chosen.liger and chosen.training_args()["use_liger_kernel"] is True
    assert chosen.training_args()["liger_kernel_config"]["fused_linear_cross_entropy"] is True
    for change, reason in ((dict(device="cpu"), "run on CUDA GPUs, and this run is on cpu"),
                           (dict(installed=False), "pip install 'weitiao[gpu]'"),
                           (dict(virtual_tokens=True), "virtual tokens"),
                           (dict(covered=False, model_type="gpt2"), "no kernels for model type 'gpt2'")):
        fallback = plan("auto", **{**ready, **change})
        assert not fallback.liger and reason in fallback.why and fallback.training_args() == {}
    assert not plan("none", **ready).liger


def test_liger_required_where_it_cannot_run_is_one_error_with_every_reason():
    with pytest.raises(WeitiaoError) as err:
        plan("liger", "cpu", "llama", False, installed=False)
    assert "run on CUDA GPUs" in str(err.value) and "not installed" in str(err.value)


def test_this_machine_decides_from_what_it_has():
    """With nothing passed in, the plan reads this machine: a CPU run falls back, and says whether liger-kernel is
    installed here."""
    import importlib.util

    chosen = plan("auto", "cpu", "llama", False)
    assert not chosen.liger and "this run is on cpu" in chosen.why
    assert ("not installed" in chosen.why) == (importlib.util.find_spec("liger_kernel") is None)
