"""Multi-process runs on PyTorch's own engines, never a launcher of our own.

`--nproc N` re-executes the same command under torch.distributed's elastic
launcher (what `torchrun` runs); a command started by torchrun or
`accelerate launch` sees RANK/WORLD_SIZE in its environment and behaves the
same.  Rank 0 alone holds the run-directory lock, prepares the data, writes
manifests, logs and reports; the other ranks wait at barriers.
"""

from __future__ import annotations

import datetime as dt
import os
import sys

# Launcher flags that `--nproc` passes through to torch.distributed.run.
LAUNCH_FLAGS = ("--nnodes", "--node-rank", "--master-addr", "--master-port")


def world_size() -> int:
    return int(os.environ.get("WORLD_SIZE", "1"))


def rank() -> int:
    return int(os.environ.get("RANK", "0"))


def is_main() -> bool:
    return rank() == 0


def init(timeout_minutes: int = 30):
    """Join the process group before any stage runs, so that rank 0 can prepare while others wait."""
    if world_size() <= 1:
        return
    import torch
    import torch.distributed as dist

    if dist.is_initialized():
        return
    backend = "nccl" if torch.cuda.is_available() else "gloo"
    if torch.cuda.is_available():
        torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", "0")))
    dist.init_process_group(backend=backend, timeout=dt.timedelta(minutes=timeout_minutes))


def barrier():
    if world_size() > 1:
        import torch.distributed as dist

        if dist.is_initialized():
            dist.barrier()


def from_main(value):
    """Rank 0's `value` in every process (a decision each rank measured for itself must be one)."""
    if world_size() <= 1:
        return value
    import torch.distributed as dist

    if not dist.is_initialized():
        return value
    holder = [value]
    dist.broadcast_object_list(holder, src=0)
    return holder[0]


def relaunch(nproc: int, launch_options: dict | None = None) -> int:
    """Run this same command in `nproc` processes; a failed rank makes the whole run exit 3."""
    from adaptctl.core import children

    argv = _without_launch_flags(sys.argv[1:])
    command = [sys.executable, "-m", "torch.distributed.run", f"--nproc_per_node={nproc}"]
    for flag, value in (launch_options or {}).items():
        if value is not None:
            command.append(f"--{flag.replace('-', '_')}={value}")
    if not launch_options or launch_options.get("nnodes") in (None, 1):
        command.append("--standalone")
    command += ["-m", "adaptctl", *argv]
    code = children.run(command)  # a stop reaches the launcher, which stops its ranks
    if code in (0, 1, 2, 130):
        return code
    return 3


def _without_launch_flags(args: list[str]) -> list[str]:
    kept, skip = [], False
    for arg in args:
        if skip:
            skip = False
            continue
        name = arg.split("=", 1)[0]
        if name in ("--nproc", *LAUNCH_FLAGS):
            skip = "=" not in arg
            continue
        kept.append(arg)
    return kept


def training_arguments(distributed) -> dict:
    """Trainer arguments for `train.distributed` (DDP needs none beyond the launcher's environment)."""
    args = {"ddp_timeout": distributed.timeout_minutes * 60}
    if distributed.strategy == "fsdp":
        args["fsdp"] = True
        args["fsdp_config"] = {"auto_wrap_policy": "TRANSFORMER_BASED_WRAP", "cpu_offload": distributed.fsdp_cpu_offload,
                               "state_dict_type": "FULL_STATE_DICT"}
    elif distributed.strategy == "deepspeed":
        args["deepspeed"] = distributed.deepspeed_config
    return args


def check_strategy(distributed):
    """A strategy the machine cannot run is the user's to change, not a crash.

    What the recipe alone decides (deepspeed needs deepspeed_config) is refused by `adaptctl validate`.
    """
    import importlib.util

    from adaptctl.core.errors import UserError

    if distributed.strategy == "deepspeed":
        if importlib.util.find_spec("deepspeed") is None:
            raise UserError("train.distributed.strategy: deepspeed is not installed",
                            hint="pip install deepspeed on the GPU server, or use strategy ddp or fsdp")
    if distributed.strategy == "fsdp" and world_size() <= 1:
        raise UserError("train.distributed.strategy: fsdp shards a model over several processes; this run has one",
                        hint="launch with --nproc N (or torchrun), or use strategy ddp")
