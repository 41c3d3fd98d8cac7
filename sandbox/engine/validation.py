"""The validation loss: the held-out split at the same noise levels and noise draws at every evaluation."""

from __future__ import annotations

import torch
from torch.utils.data import DataLoader

from sandbox.engine import distributed
from sandbox.engine.loss import DiffusionLoss
from sandbox.engine.precond import Preconditioned
from sandbox.protocols import first_tensor, item_label


@torch.no_grad()
def validation_loss(
    denoiser: Preconditioned,
    loss_fn: DiffusionLoss,
    loader: DataLoader,
    device: torch.device,
    max_batches: int,
    seed: int,
    labels: bool = False,
) -> float:
    """Mean loss on the held-out split with the same t and noise draws at every evaluation.

    With several processes each takes its :func:`sandbox.engine.distributed.part` of every batch (with that part
    of the batch's draws) and the sums are added over the processes: the figure a single process gets.
    With ``labels`` (a conditional run) the network sees each item's class, none dropped.
    """
    was_training = denoiser.training
    denoiser.eval()
    generator = torch.Generator().manual_seed(seed)
    total, count = torch.zeros((), device=device), 0
    for i, batch in enumerate(loader):
        if max_batches and i >= max_batches:
            break
        x0 = first_tensor(batch)
        start, stop = distributed.part(x0.shape[0])
        if stop == start:  # only the last batch can be smaller than the number of processes
            continue
        classes = item_label(batch)[start:stop].to(device) if labels else None
        losses = loss_fn(denoiser, x0[start:stop].to(device), generator, within=(start, x0.shape[0]), labels=classes)
        total += losses.sum()
        count += losses.numel()
    denoiser.train(was_training)
    sums = distributed.all_reduce_sum(torch.tensor([float(total), count], dtype=torch.float64))
    return float(sums[0]) / max(float(sums[1]), 1.0)
