"""Multi-process training on this CPU (gloo): LoRA under DDP and full fine-tuning under FSDP on 2 processes, each
killed after a checkpoint and resumed, and LoRA on a loopback two-node run, each compared with one process at the
same global batch and seed; the outputs load like a single-device run's.

Every run is the real command (`weitiao train CONFIG --nproc 2`, which starts torchrun) on the tiny Llama.
"""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from conftest import free_port, run_cli, write_config

from weitiao.training.checkpoints import is_complete

STEPS = 12  # a checkpoint every 3 steps
TOL = 1e-5


def config(tmp: Path, model_dir, data_dir, name: str, batch: int, method: str, strategy: str = "auto") -> Path:
    return write_config(tmp / f"{name}.yaml", model_dir, data_dir, tmp / "runs" / name,
                        method={"name": method, "lora": {"r": 4, "alpha": 8}},
                        train={"max_steps": STEPS, "batch_size": batch, "learning_rate": 1e-3, "eval_steps": 3,
                               "logging_steps": 1, "precision": "fp32", "save_total_limit": 3},
                        eval={"metrics": ["exact_match"], "generation": {"max_new_tokens": 4, "batch_size": 4}},
                        distributed={"strategy": strategy})


def train(cfg: Path, *flags) -> subprocess.CompletedProcess:
    done = run_cli("train", cfg, *flags)
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-3000:]
    return done


def results(run: Path) -> dict:
    metrics = json.loads((run / "metrics.json").read_text())
    history = json.loads((run / "trainer_state.json").read_text())["log_history"]
    return {"losses": [h["loss"] for h in history if "loss" in h], "val": [v["loss"] for v in metrics["val"]],
            "test": metrics["test"]["tuned"]["loss"], "distributed": metrics["distributed"]}


def weights(run: Path) -> dict:
    from safetensors.torch import load_file

    name = "adapter/adapter_model.safetensors" if (run / "adapter").is_dir() else "model/model.safetensors"
    return load_file(run / name)


def assert_same_run(got: dict, want: dict, got_w: dict, want_w: dict) -> None:
    assert len(got["losses"]) == len(want["losses"]) == STEPS
    for a, b in zip(got["losses"] + got["val"] + [got["test"]], want["losses"] + want["val"] + [want["test"]]):
        assert a == pytest.approx(b, abs=1e-4)
    assert got_w.keys() == want_w.keys()
    assert max(float((got_w[k] - want_w[k]).abs().max()) for k in want_w) <= TOL


def kill_after_first_checkpoint(cfg: Path, run: Path) -> None:
    """Start a 2-process run and SIGKILL its launcher once checkpoint-3 is complete, as a crash would. The workers
    die with it (they ask Linux for that), so nothing writes into the folder afterwards."""
    env = dict(os.environ, PYTHONWARNINGS="ignore")
    proc = subprocess.Popen([sys.executable, "-m", "weitiao", "train", str(cfg), "--nproc", "2"],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=env)
    first = run / "checkpoints" / "checkpoint-3"
    deadline = time.time() + 300
    while proc.poll() is None and not is_complete(first) and time.time() < deadline:
        time.sleep(0.002)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    time.sleep(1.0)
    assert json.loads((run / "run.json").read_text())["status"] == "running", "the run ended before the kill"
    assert is_complete(first)
    listing = subprocess.run(["ps", "-eo", "args"], capture_output=True, text=True).stdout
    assert str(cfg) not in listing, "a worker outlived its launcher"


@pytest.fixture(scope="module")
def single(tmp_path_factory, tiny_model_dir, demo_data_dir):
    """One-process reference runs, LoRA and full, at global batch 4."""
    tmp = tmp_path_factory.mktemp("single")
    out = {}
    for method in ("lora", "full"):
        cfg = config(tmp, tiny_model_dir, demo_data_dir, f"single-{method}", 4, method)
        train(cfg)
        run = tmp / "runs" / f"single-{method}"
        out[method] = (results(run), weights(run))
    return out


def test_lora_under_ddp_killed_and_resumed_matches_one_process(tmp_path, tiny_model_dir, demo_data_dir, single):
    """DDP, the default strategy: SIGKILLed once checkpoint-3 is complete, rerun, resumed from it, and the losses
    and weights of the whole run are one process's."""
    want, want_w = single["lora"]
    ddp = config(tmp_path, tiny_model_dir, demo_data_dir, "ddp", 2, "lora", "ddp")
    run = tmp_path / "runs" / "ddp"
    kill_after_first_checkpoint(ddp, run)
    out = train(ddp, "--nproc", "2").stdout
    assert "resuming from" in out and "checkpoint-3" in out
    got = results(run)
    assert got["distributed"]["strategy"] == "ddp" and got["distributed"]["fraction_on_rank0"] == 1.0
    assert_same_run(got, want, weights(run), want_w)


def test_full_under_fsdp_killed_and_resumed_matches_one_process(tmp_path, tiny_model_dir, demo_data_dir, single):
    """FSDP, full fine-tuning: rank 0 holds half of the weights, the optimizer state is checkpointed shard by
    shard, the resumed run is one process's, and its output is a plain model folder that `weitiao eval` reads as
    a one-process run's. LoRA under FSDP and full under DDP, each two more launches of 2 processes (about a minute
    of the suite on 2 cores), are run by `bench/kill_resume.py --nproc 2 --after-complete --strategy fsdp` and
    `--method full`."""
    want, want_w = single["full"]
    fsdp = config(tmp_path, tiny_model_dir, demo_data_dir, "fsdp", 2, "full", "fsdp")
    run = tmp_path / "runs" / "fsdp"
    kill_after_first_checkpoint(fsdp, run)
    assert (run / "checkpoints" / "checkpoint-3" / "sharded_state" / ".metadata").is_file()
    out = train(fsdp, "--nproc", "2").stdout
    assert "distributed: fsdp on 2 processes" in out
    assert "resuming from" in out and "checkpoint-3" in out
    got = results(run)
    # FSDP really shards: rank 0 holds half of the weights (DTensor shards), DDP all of them
    assert got["distributed"]["strategy"] == "fsdp" and got["distributed"]["processes"] == 2
    assert got["distributed"]["fraction_on_rank0"] == pytest.approx(0.5, abs=0.01)
    assert_same_run(got, want, weights(run), want_w)
    # a full model folder, with the tokenizer, that loads on one process
    assert (run / "model" / "config.json").is_file() and (run / "model" / "tokenizer.json").is_file()
    evaluated = run_cli("eval", run, "--out", tmp_path / "eval.json")
    assert evaluated.returncode == 0, evaluated.stderr[-2000:]
    assert json.loads((tmp_path / "eval.json").read_text())["metrics"]["loss"] == pytest.approx(want["test"],
                                                                                                abs=1e-4)


def test_two_nodes_on_loopback_match_one_process(tmp_path, tiny_model_dir, demo_data_dir, single):
    want, want_w = single["lora"]
    cfg = config(tmp_path, tiny_model_dir, demo_data_dir, "nodes", 2, "lora")
    port = str(free_port())
    env = dict(os.environ, PYTHONWARNINGS="ignore")
    common = [sys.executable, "-m", "weitiao", "train", str(cfg), "--nnodes", "2", "--master-addr", "127.0.0.1",
              "--master-port", port]
    node1 = subprocess.Popen([*common, "--node-rank", "1"], stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                             text=True, env=env)
    node0 = subprocess.run([*common, "--node-rank", "0"], capture_output=True, text=True, env=env, timeout=600)
    out1, _ = node1.communicate(timeout=120)
    assert node0.returncode == 0, node0.stderr[-3000:]
    assert node1.returncode == 0, out1[-3000:]
    assert "distributed: ddp on 2 processes (2 node(s)" in node0.stdout
    run = tmp_path / "runs" / "nodes"
    got = results(run)
    assert got["distributed"]["nodes"] == 2
    assert_same_run(got, want, weights(run), want_w)
    assert "saved adapter" not in out1  # rank 1 prints nothing of the run's progress and writes nothing


# ---------------------------------------------------------------- without launching


def test_strategy_reports_what_runs():
    from types import SimpleNamespace

    from weitiao.training.distributed import World, strategy

    cfg = SimpleNamespace(distributed=SimpleNamespace(strategy="fsdp"))
    assert strategy(cfg, World(0, 1, 0, 1)) == "single"  # one process: nothing to shard, and it says so
    assert strategy(cfg, World(0, 2, 0, 2)) == "fsdp"
    cfg.distributed.strategy = "auto"
    assert strategy(cfg, World(1, 4, 1, 2)) == "ddp"
    assert World(1, 4, 1, 2).nodes == 2 and not World(1, 4, 1, 2).main


def test_deepspeed_config_follows_the_section():
    from weitiao.config import DistributedConfig
    from weitiao.training.distributed import deepspeed_config

    ds = deepspeed_config(DistributedConfig(strategy="deepspeed", zero_stage=3, offload_optimizer=True,
                                            offload_params=True))
    zero = ds["zero_optimization"]
    assert zero["stage"] == 3 and zero["offload_optimizer"]["device"] == "cpu"
    assert zero["offload_param"]["device"] == "cpu" and zero["stage3_gather_16bit_weights_on_model_save"]
    # batch, accumulation, clipping and precision come from the Trainer's own settings
    assert ds["train_micro_batch_size_per_gpu"] == ds["gradient_accumulation_steps"] == "auto"
    assert "offload_param" not in deepspeed_config(DistributedConfig(zero_stage=2))["zero_optimization"]


def test_distributed_config_errors_are_reported_together(tmp_path, tiny_model_dir, demo_data_dir):
    from weitiao.config import load_config
    from weitiao.errors import WeitiaoError

    cfg = write_config(tmp_path / "c.yaml", tiny_model_dir, demo_data_dir, tmp_path / "out",
                       method={"name": "qlora"},
                       distributed={"strategy": "fsdp", "zero_stage": 4, "offload_params": True})
    with pytest.raises(WeitiaoError) as err:
        load_config(cfg)
    text = str(err.value)
    assert "distributed.strategy: fsdp trains full, freeze and lora" in text
    assert "distributed.zero_stage: 1, 2 or 3, got 4" in text
    assert "distributed.offload_params" in text


def test_on_main_without_a_process_group_just_runs():
    from weitiao.training.distributed import on_main, sharding

    assert on_main(lambda: 41 + 1) == 42
    import torch

    counts = sharding(torch.nn.Linear(4, 3))
    assert counts == {"params": 15, "params_on_rank0": 15, "fraction_on_rank0": 1.0}


def test_multi_process_checkpoints_count_as_complete(tmp_path):
    """A DDP checkpoint has one RNG file per rank; an FSDP one its optimizer as a sharded DCP folder. An RNG file
    that rank 1 has not finished writing (rank 0 writes trainer_state.json without waiting for it) is incomplete,
    and so is a checkpoint the ranks have not sealed together (training.callbacks.SealCheckpoint)."""
    import torch

    ckpt = tmp_path / "checkpoint-3"
    (ckpt / "sharded_state").mkdir(parents=True)
    (ckpt / "trainer_state.json").write_text('{"global_step": 3}')
    (ckpt / "model.safetensors").write_bytes(b"x")
    for name in ("scheduler.pt", "rng_state_0.pth", "rng_state_1.pth"):
        torch.save({"state": torch.zeros(4)}, ckpt / name)
    assert not is_complete(ckpt)  # no optimizer state yet
    (ckpt / "sharded_state" / ".metadata").write_bytes(b"x")
    assert not is_complete(ckpt)  # every file there, but not sealed: rank 1 may still be writing one
    (ckpt / "weitiao_checkpoint.json").write_text('{"step": 3, "world_size": 2}')
    assert is_complete(ckpt)
    whole = (ckpt / "rng_state_1.pth").read_bytes()
    for cut in (b"", whole[: len(whole) // 2]):  # as a kill leaves it: empty, or written half-way
        (ckpt / "rng_state_1.pth").write_bytes(cut)
        assert not is_complete(ckpt)


def test_bad_launch_requests_fail_with_one_message(tmp_path, tiny_model_dir, demo_data_dir):
    cfg = write_config(tmp_path / "c.yaml", tiny_model_dir, demo_data_dir, tmp_path / "out")
    done = run_cli("train", cfg, "--nproc", "0")
    assert done.returncode == 2 and "need nproc >= 1" in done.stderr and "Traceback" not in done.stderr
    # DeepSpeed needs CUDA: each process stops before loading the model, and nothing is written
    done = run_cli("train", cfg, "distributed.strategy=deepspeed", "--nproc", "2")
    assert done.returncode != 0
    assert "deepspeed runs on CUDA GPUs only" in done.stderr + done.stdout
    assert "Traceback" not in done.stderr + done.stdout and not (tmp_path / "out").exists()
