"""Data-parallel training over several processes (``torchrun``): the process group, reductions, the launcher.

``torchrun --nproc_per_node N -m sandbox run RECIPE`` (or ``sandbox run RECIPE
--nproc N``, which starts torchrun through :func:`launch`) runs one process
per device. Each reads torchrun's ``RANK``, ``WORLD_SIZE`` and ``LOCAL_RANK``;
:func:`setup` joins the process group (NCCL on CUDA, each process on its own
``cuda:LOCAL_RANK``; gloo on the CPU) and the network trains inside
:class:`torch.nn.parallel.DistributedDataParallel` (Li et al. 2020, "PyTorch
Distributed: Experiences on Accelerating Data Parallel Training"), which
averages the gradients of the processes after every backward pass.

``train.batch_size`` is the global batch: every process walks the same
resumable data order and keeps its own disjoint :func:`part` of each global
batch, and the training noise and times are drawn for the whole global
batch from generators that are in the same state in every process, then
split the same way. A run on N processes therefore computes the gradient a
single process computes for the same global batch, up to the order of
floating-point sums, and its checkpoints load in a run on any number of
processes. Only the main process (rank 0) writes files and prints; the
others learn the run folder through :func:`broadcast_object`.

Outside torchrun (``WORLD_SIZE`` unset or 1) every function here is the
identity or does nothing, so the engine calls them unconditionally.
"""

from __future__ import annotations

import inspect
import os
import signal
import sys
from typing import Any, Optional

import torch
import torch.distributed as dist

from sandbox.engine.device import pick_device
from sandbox.errors import ParameterError, RecipeError

#: seconds torchrun waits for the processes to write their checkpoint after a signal before it kills them
SHUTDOWN_TIMEOUT_S = 120

_control: Optional[Any] = None  # a gloo group for host-side flags (the stop request), also when NCCL trains


def launched() -> bool:
    """Whether this process is one of several started by torchrun (``WORLD_SIZE`` > 1)."""
    return int(os.environ.get("WORLD_SIZE", "1")) > 1


def rank() -> int:
    return int(os.environ.get("RANK", "0")) if launched() else 0


def local_rank() -> int:
    return int(os.environ.get("LOCAL_RANK", "0")) if launched() else 0


def world_size() -> int:
    return int(os.environ.get("WORLD_SIZE", "1"))


def is_main() -> bool:
    """Rank 0, the only process that writes the run folder and prints (true in a single-process run)."""
    return rank() == 0


def active() -> bool:
    """Whether the process group is up (several processes train together)."""
    return dist.is_available() and dist.is_initialized()


def every_rank(exc: BaseException) -> bool:
    """Whether every process meets this error alike (a recipe error, a stop agreed by all), so that rank 0
    alone reports it; errors set ``every_rank = True`` to say so."""
    return isinstance(exc, RecipeError) or bool(getattr(exc, "every_rank", False))


def check_batch(batch_size: int, processes: int) -> None:
    """``train.batch_size`` is the global batch: it must split evenly over the processes."""
    if batch_size % processes:
        raise RecipeError(
            ParameterError(
                "batch_size",
                batch_size,
                f"a multiple of the {processes} processes (it is the global batch, split evenly across them)",
            ).in_section("train")
        )


def setup(recipe: Any) -> torch.device:
    """This process's device; under torchrun, also join the process group (NCCL on CUDA, gloo on the CPU).

    In a single process this is :func:`sandbox.engine.device.pick_device` of ``run.device``.
    """
    device = pick_device(recipe.run.device)
    if not launched():
        return device
    n = world_size()
    check_batch(recipe.train.batch_size, n)
    if device.type == "cuda":
        if recipe.run.device not in ("auto", "cuda"):
            raise RecipeError(
                f"recipe key 'run.device': {recipe.run.device!r} names one device, but each of the {n} processes "
                "trains on its own (cuda:LOCAL_RANK); use auto or cuda"
            )
        if local_rank() >= torch.cuda.device_count():
            raise RecipeError(
                f"local rank {local_rank()} has no CUDA device: this machine has {torch.cuda.device_count()}; "
                "start at most that many processes per node"
            )
        device = torch.device("cuda", local_rank())
        torch.cuda.set_device(device)
        backend = "nccl"
    elif device.type == "cpu":
        backend = "gloo"
    else:
        raise RecipeError(
            f"recipe key 'run.device': {recipe.run.device!r} ({device.type}) cannot train in several processes; "
            "use cuda or cpu"
        )
    global _control
    if not active():
        dist.init_process_group(backend)
        _control = dist.new_group(backend="gloo") if backend != "gloo" else dist.group.WORLD
    return device


def shutdown() -> None:
    """Leave the process group (every process, at the end of a run)."""
    global _control
    if active():
        dist.destroy_process_group()
    _control = None


def leaving() -> None:
    """Ignore SIGINT and SIGTERM from now on, in a process that leaves after a stop every process agreed on:
    torchrun's agent signals the processes still running once the first one has exited."""
    if active():
        for signum in (signal.SIGINT, signal.SIGTERM):
            signal.signal(signum, signal.SIG_IGN)


def barrier() -> None:
    """Wait until every process arrives here."""
    if active():
        dist.barrier(group=_control)


def part(n: int) -> tuple[int, int]:
    """This process's rows ``[start, stop)`` of a global batch of ``n``: consecutive, disjoint, covering all."""
    if not active():
        return 0, n
    r, w = rank(), world_size()
    return r * n // w, (r + 1) * n // w


def shard(batch: torch.Tensor) -> torch.Tensor:
    """This process's :func:`part` of a global batch."""
    start, stop = part(batch.shape[0])
    return batch if stop - start == batch.shape[0] else batch[start:stop]


def all_reduce_sum(tensor: torch.Tensor) -> torch.Tensor:
    """Sum ``tensor`` over the processes, in place (on its own device: NCCL for CUDA tensors, else gloo)."""
    if active():
        dist.all_reduce(tensor, op=dist.ReduceOp.SUM, group=None if tensor.is_cuda else _control)
    return tensor


def all_reduce_mean(tensor: torch.Tensor) -> torch.Tensor:
    """Average ``tensor`` over the processes, in place."""
    if active():
        all_reduce_sum(tensor).div_(world_size())
    return tensor


def agree(*flags: float) -> list[float]:
    """The largest value of each host-side flag over the processes (gloo, no device synchronisation).

    Used once per step for the stop request (a signal that reached any process stops all at the same
    step) and for wall-clock checkpoints, whose timers differ between processes.
    """
    if not active():
        return list(flags)
    values = torch.tensor(flags, dtype=torch.float64)
    dist.all_reduce(values, op=dist.ReduceOp.MAX, group=_control)
    return values.tolist()


def broadcast_object(obj: Any) -> Any:
    """Rank 0's ``obj`` (picklable), in every process."""
    if not active():
        return obj
    box = [obj]
    dist.broadcast_object_list(box, src=0, group=_control)
    return box[0]


def wrap(net: torch.nn.Module, device: torch.device) -> torch.nn.Module:
    """``net`` in :class:`~torch.nn.parallel.DistributedDataParallel` when several processes train, else ``net``.

    The wrapper shares ``net``'s parameters, so checkpoints hold the plain module's state (they load in a
    run on any number of processes). Buffers are not broadcast at each forward: validation then needs
    no collective inside the network.
    """
    if not active():
        return net
    from torch.nn.parallel import DistributedDataParallel

    ids = [device.index] if device.type == "cuda" else None
    newer = "forward_sync_buffers" in inspect.signature(DistributedDataParallel).parameters  # torch >= 2.14
    no_sync: dict[str, Any] = {"forward_sync_buffers" if newer else "broadcast_buffers": False}
    return DistributedDataParallel(net, device_ids=ids, **no_sync)


def launch(nproc: int, argv: list[str]) -> int:
    """Run ``python -m sandbox <argv>`` in ``nproc`` processes on this machine through torchrun's agent.

    The agent forwards SIGINT / SIGTERM to every process (each writes its part of the checkpoint and
    stops) and stops all of them when one fails. Returns the exit status of the first process to fail
    (128 + the signal's number for a signal), or 0.
    """
    from torch.distributed.elastic.multiprocessing.api import SignalException
    from torch.distributed.elastic.multiprocessing.errors import ChildFailedError
    from torch.distributed.run import parse_args, run

    os.environ.setdefault("OMP_NUM_THREADS", "1")  # torchrun's default, without its banner
    os.environ.setdefault("TORCH_ELASTIC_SHUTDOWN_TIMEOUT", str(SHUTDOWN_TIMEOUT_S))
    args = parse_args(["--standalone", f"--nproc_per_node={nproc}", "--module", "sandbox", *argv])
    try:
        run(args)
    except SignalException as exc:
        return 128 + int(exc.sigval)
    except ChildFailedError as exc:
        _, failure = exc.get_first_failure()
        code = failure.exitcode
        return 128 - code if code < 0 else code  # a negative exit code is a signal's number
    except KeyboardInterrupt:
        return 130
    finally:
        sys.stdout.flush()
    return 0
