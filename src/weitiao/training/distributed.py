"""One config on several processes: DDP, FSDP2 or DeepSpeed ZeRO, launched through torchrun.

weitiao has no distributed layer of its own. `weitiao train --nproc N` starts N copies of itself with PyTorch's
torchrun (`torch.distributed.run`, which accelerate's launcher also wraps); transformers' Trainer runs DDP and
DeepSpeed through accelerate, and transformers shards the model with FSDP2 as it loads it (`DistributedConfig`).

Why FSDP goes through transformers' load-time sharding and not through accelerate's FSDP plugin: accelerate turns
FSDP on only for accelerator devices, so on CPU processes (gloo) the Trainer's `fsdp=` setting silently runs DDP.
Load-time sharding works on both, and it is what weitiao reports (`sharding()` counts the weights each process
really holds). Its one gap, checkpoints of the optimizer state, is filled by `training.sharded_checkpoint`.

This module tells processes apart (rank 0 alone prints and writes), decides what rank 0 decides for everyone
(`on_main`), and turns the `distributed` config section into loading and Trainer arguments.
"""
from __future__ import annotations

import contextlib
import os
from dataclasses import dataclass

from weitiao.errors import WeitiaoError


@dataclass(frozen=True)
class World:
    rank: int  # global rank, 0 .. world_size - 1
    world_size: int  # processes in all
    local_rank: int  # rank on this machine
    local_world_size: int  # processes on this machine

    @property
    def main(self) -> bool:
        return self.rank == 0

    @property
    def nodes(self) -> int:
        return max(1, self.world_size // max(1, self.local_world_size))


def world() -> World:
    """This process's place, from the environment torchrun and accelerate launch set (one process without it)."""
    env = os.environ
    size = int(env.get("WORLD_SIZE", 1))
    return World(int(env.get("RANK", 0)), size, int(env.get("LOCAL_RANK", 0)), int(env.get("LOCAL_WORLD_SIZE", size)))


def strategy(cfg, w: World | None = None) -> str:
    """The strategy this run executes: `single` on one process, else the configured one (`auto` is ddp)."""
    w = w or world()
    if w.world_size == 1:
        return "single"
    return "ddp" if cfg.distributed.strategy == "auto" else cfg.distributed.strategy


def backend(cfg, device: str) -> str:
    if cfg.distributed.backend != "auto":
        return cfg.distributed.backend
    return "nccl" if device == "cuda" else "gloo"


def init(cfg, device: str) -> None:
    """Join the process group early, so rank 0 can decide about the output folder before anyone writes to it.
    accelerate and transformers find it initialised and use it."""
    import torch
    import torch.distributed as dist

    w = world()
    if w.world_size == 1 or dist.is_initialized():
        return
    die_with_launcher()
    if device == "cuda":
        torch.cuda.set_device(w.local_rank)
    name = backend(cfg, device)
    # "cpu:gloo,cuda:nccl": objects broadcast by on_main travel on gloo, tensors on the GPUs on nccl
    dist.init_process_group("cpu:gloo,cuda:nccl" if name == "nccl" else name)


def die_with_launcher() -> None:
    """Ask Linux to kill this process when its launcher dies. torchrun starts its workers in their own session, so
    a launcher killed with SIGKILL (or by a crash) would leave them training on, writing into the run folder that
    a resume is about to use. Elsewhere nothing is done."""
    import ctypes
    import signal
    import sys

    if not sys.platform.startswith("linux"):
        return
    PR_SET_PDEATHSIG = 1
    try:
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGKILL)
    except OSError:
        return
    if os.getppid() == 1:  # the launcher died before the request was made
        os.kill(os.getpid(), signal.SIGKILL)


def finish() -> None:
    """Leave the process group together; a rank that exits without it can abort the others at exit."""
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():
        dist.barrier()
        dist.destroy_process_group()


def barrier() -> None:
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():
        dist.barrier()


def on_main(fn):
    """`fn()` run on rank 0 alone; every rank returns its result, or raises the WeitiaoError it raised there.

    For decisions that touch the file system (is the output folder free, which checkpoint resumes): one process
    decides, so the processes cannot disagree and only one removes or writes anything."""
    import torch.distributed as dist

    if not (dist.is_available() and dist.is_initialized()) or dist.get_world_size() == 1:
        return fn()
    box = [None]
    if dist.get_rank() == 0:
        try:
            box[0] = ("ok", fn())
        except WeitiaoError as err:
            box[0] = ("error", str(err))
    dist.broadcast_object_list(box, src=0)
    kind, value = box[0]
    if kind == "error":
        raise WeitiaoError(value)
    return value


# ---------------------------------------------------------------- config -> transformers and accelerate arguments


def load_kwargs(cfg, w: World | None = None) -> dict:
    """`from_pretrained` arguments: under fsdp, transformers shards every decoder layer, the embeddings and the
    final norm/head over the processes while loading (each process reads only its shard)."""
    w = w or world()
    if strategy(cfg, w) != "fsdp":
        return {}
    from transformers.distributed import DistributedConfig as ShardingConfig

    plan = None
    if cfg.distributed.fsdp_sharding == "shard_grad_op":
        # keep each layer's gathered weights from its forward to its backward (FSDP2 reshard_after_forward=False)
        plan = {"model.layers.*": "keep_full_weight", "model.embed_tokens": "keep_full_weight"}
    return {"distributed_config": ShardingConfig(fsdp_size=w.world_size, fsdp_plan=plan,
                                                 fsdp_cpu_offload=cfg.distributed.fsdp_cpu_offload)}


def training_args(cfg, device: str, w: World | None = None) -> dict:
    """TrainingArguments for the strategy. The Trainer's own distributed choices follow from the environment
    (accelerate reads RANK/WORLD_SIZE); these say which backend and which engine."""
    w = w or world()
    run = strategy(cfg, w)
    if run == "single":
        return {}
    out = {"ddp_backend": backend(cfg, device), "ddp_find_unused_parameters": False}
    if run == "fsdp":
        # the Trainer refuses to checkpoint the optimizer of a load-time-sharded model; weitiao's
        # ShardedCheckpointTrainer writes it (with the scheduler) as a torch.distributed.checkpoint
        out["save_only_model"] = True
    if run == "deepspeed":
        out["deepspeed"] = deepspeed_config(cfg.distributed)
    return out


def deepspeed_config(section) -> dict:
    """A DeepSpeed config for ZeRO stage 1/2/3; "auto" values are filled in by transformers from the Trainer's
    own settings (batch size, accumulation, clipping, precision), so the two cannot disagree."""
    zero: dict = {"stage": section.zero_stage, "overlap_comm": True, "contiguous_gradients": True}
    if section.offload_optimizer:
        zero["offload_optimizer"] = {"device": "cpu", "pin_memory": True}
    if section.offload_params:
        zero["offload_param"] = {"device": "cpu", "pin_memory": True}
    if section.zero_stage == 3:
        zero["stage3_gather_16bit_weights_on_model_save"] = True  # save a normal model folder, not ZeRO shards
    return {"zero_optimization": zero, "train_micro_batch_size_per_gpu": "auto",
            "gradient_accumulation_steps": "auto", "gradient_clipping": "auto",
            "bf16": {"enabled": "auto"}, "fp16": {"enabled": "auto"}}


def check_available(cfg, device: str, w: World | None = None) -> None:
    """Errors that can be known before the model loads."""
    run = strategy(cfg, w)
    if run == "deepspeed":
        if device != "cuda":
            raise WeitiaoError("distributed.strategy: deepspeed runs on CUDA GPUs only; on this machine use ddp or "
                               "fsdp")
        import importlib.util

        if importlib.util.find_spec("deepspeed") is None:
            raise WeitiaoError("distributed.strategy: deepspeed is not installed (pip install deepspeed)")
        from weitiao.console import log

        log("warning: distributed.strategy deepspeed is configured by weitiao but has never run in its tests (it "
            "needs CUDA GPUs); fsdp is the tested way to shard a model (distributed.strategy=fsdp)")


def sharding(model) -> dict:
    """How many weights this process holds against the model's total: about 1/N of them under FSDP, all of them
    under DDP. Counted from the parameters themselves (a DTensor's local shard), not from the config."""
    from torch.distributed.tensor import DTensor

    total = local = 0
    for p in model.parameters():
        total += p.numel()
        local += p.to_local().numel() if isinstance(p, DTensor) else p.numel()
    return {"params": total, "params_on_rank0": local, "fraction_on_rank0": round(local / max(total, 1), 4)}


@contextlib.contextmanager
def gathered_for_inference(model, device: str, log=print):
    """Keep an FSDP2 model's weights gathered while it scores the test split, when they fit.

    FSDP frees each layer's gathered weights after its forward, so generation would all-gather every layer for
    every new token: on 2 CPU processes (gloo) scoring SmolLM2's test rows took 114 s against 29 s under DDP.
    Gathered once, decoding runs at single-device speed. The full weights must then fit on every process: they are
    kept gathered only when they take less than half of the memory available to it. Elsewhere nothing changes."""
    from torch.distributed.fsdp import FSDPModule

    from weitiao.memory.available import available_bytes

    units = [m for m in model.modules() if isinstance(m, FSDPModule)]
    full = sum(p.numel() * p.element_size() for p in model.parameters())  # DTensor numel is the global size
    free = available_bytes(device)
    share = 1 if device == "cuda" else world().local_world_size  # CPU processes share the machine's memory
    if not units or free is None or full * share >= 0.5 * free:
        yield
        return
    log(f"evaluation: FSDP weights kept gathered on each process ({full / 2**30:.2f} GiB) while scoring")
    before = [reshards_after_forward(m) for m in units]
    for m in units:
        m.set_reshard_after_forward(False, recurse=False)
    try:
        yield
    finally:
        for m, again in zip(units, before):
            m.reshard()
            m.set_reshard_after_forward(again, recurse=False)


def reshards_after_forward(unit) -> bool:
    """Whether an FSDP2 unit frees its gathered weights after forward. FSDP2 has a setter for this but no getter;
    the param group's post-forward mesh is set exactly when it reshards (torch 2.4-2.13)."""
    group = getattr(unit._get_fsdp_state(), "_fsdp_param_group", None)
    return group is None or getattr(group, "post_forward_mesh_info", True) is not None


# ---------------------------------------------------------------- launching


def launch(command: list[str], nproc: int, nnodes: int = 1, node_rank: int = 0, master_addr: str = "127.0.0.1",
           master_port: int = 29500) -> int:
    """Run `python -m weitiao COMMAND` on `nproc` processes of this machine (one node of `nnodes`) with torchrun;
    returns the exit code. Each child prints its own error; the launcher adds one line, no traceback."""
    import logging

    from torch.distributed.elastic.multiprocessing.errors import ChildFailedError
    from torch.distributed.run import get_args_parser, run

    if "OMP_NUM_THREADS" not in os.environ:  # torchrun would set 1: share this machine's cores instead
        os.environ["OMP_NUM_THREADS"] = str(max(1, (os.cpu_count() or 1) // nproc))
    rendezvous = (["--standalone"] if nnodes == 1 else
                  ["--nnodes", str(nnodes), "--node-rank", str(node_rank), "--master-addr", master_addr,
                   "--master-port", str(master_port)])
    args = get_args_parser().parse_args(
        [*rendezvous, "--nproc-per-node", str(nproc), "--module", "weitiao", *command])
    logging.getLogger("torch.distributed.elastic").setLevel(logging.CRITICAL)  # its failure report is a traceback
    try:
        run(args)
    except ChildFailedError as err:
        codes = sorted({f.exitcode for f in err.failures.values()})
        print(f"error: {len(err.failures)} of {nproc * nnodes} processes failed (exit code "
              f"{', '.join(map(str, codes))}); their messages are above", flush=True)
        return 1
    return 0
