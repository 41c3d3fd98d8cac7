"""The probability-flow ODE's likelihood (Song et al. 2021, "Score-Based Generative Modeling through SDEs", eq. 39).

Written in the scale-free variable ``y = x_t / alpha`` and the log-SNR ``lambda``, the probability-flow ODE
of ``x_t = alpha x_0 + sigma eps`` is ``dy/dlambda = (D(alpha y, t) - y) / 2`` (EDM's ``dy/dsigma~ = (y -
D) / sigma~`` with ``sigma~ = e^{-lambda / 2}``; Karras et al. 2022, eq. 4), and by the instantaneous change
of variables (Chen et al. 2018)

    log p_{lambda_max}(y_0) = log p_{lambda_min}(y_1) + int_{lambda_max}^{lambda_min} (div_y D - n) / 2 dlambda,

integrated from the data (``lambda_max``) to the noise end (``lambda_min``, t = 1), where ``y_1`` is
scored by the samplers' prior. ``p_{lambda_max}`` is the data's density smoothed by ``N(0, sigma~_max^2 I)``,
which for ``sigma~_max`` far below the data's scale is the data's density. The divergence is exact
(``n`` vector-Jacobian products with the basis, one batched call) or Hutchinson-Skilling's unbiased
``E_v[v^T (dD/dy) v]`` with Rademacher probes held fixed along the path (Grathwohl et al. 2019), so the
ODE stays deterministic for the adaptive solver. The solver is SciPy's ``solve_ivp`` (Dormand-Prince
RK45 by default), with relative and absolute tolerances over the whole batch's state.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Optional

import numpy as np
import torch
from scipy.integrate import solve_ivp

from sandbox.engine.likelihood.estimate import LogSnrRange, prior_log_density, scales
from sandbox.protocols import Denoise, Schedule

DIVERGENCES = ("exact", "hutchinson")


def ode_nll(
    denoise: Denoise,
    schedule: Schedule,
    y0: torch.Tensor,
    *,
    span: LogSnrRange,
    divergence: str = "exact",
    probes: int = 1,
    rtol: float = 1e-3,
    atol: float = 1e-3,
    generator: torch.Generator,
    method: str = "RK45",
    progress: Optional[Callable[[float], None]] = None,
) -> tuple[torch.Tensor, dict[str, Any]]:
    """``-log p_{lambda_max}(y_0)`` per item (float64 nats) and what it took (``nfe``: network evaluations
    per item, ``calls``: solver function evaluations, ``lambda``: the interval). ``progress(fraction)`` hears
    how far along the log-SNR interval the solver is.

    The network runs in ``y0``'s dtype (float32 for a trained network, float64 for an exact denoiser).
    """
    if divergence not in DIVERGENCES:
        raise ValueError(f"divergence must be one of {', '.join(DIVERGENCES)}, got {divergence!r}")
    if not (rtol > 0 and atol > 0 and np.isfinite(rtol) and np.isfinite(atol)):
        raise ValueError(f"tolerances must be positive and finite, got rtol={rtol}, atol={atol}")
    b, shape, dtype = len(y0), tuple(y0.shape[1:]), y0.dtype
    dims = int(np.prod(shape))
    if divergence == "exact":
        probe = torch.eye(dims, dtype=dtype)[:, None, :].expand(dims, b, dims)
    else:
        draws = torch.randint(0, 2, (probes, b, dims), generator=generator, dtype=torch.int64)
        probe = (2 * draws - 1).to(dtype)
    copies = len(probe)
    calls = 0

    def velocity(lam: float, state: np.ndarray) -> np.ndarray:
        nonlocal calls
        calls += 1
        if progress is not None:
            progress((span.high - lam) / (span.high - span.low))
        y = torch.from_numpy(state[: b * dims]).reshape(b, *shape)
        t = schedule.t_from_log_snr(torch.tensor([lam], dtype=torch.float64)).reshape(())
        alpha = float(scales(schedule, t.reshape(1))[0][0])
        x0, div = denoised_divergence(denoise, y.to(dtype), t, alpha, probe, exact=divergence == "exact")
        dy = (x0.reshape(b, dims) - y.reshape(b, dims)) / 2
        return torch.cat([dy.reshape(-1), (div - dims) / 2]).numpy()

    state0 = np.concatenate([y0.detach().to(torch.float64).reshape(-1).numpy(), np.zeros(b)])
    solution = solve_ivp(velocity, (span.high, span.low), state0, method=method, rtol=rtol, atol=atol)
    if not solution.success:
        raise RuntimeError(f"the probability-flow ODE did not solve: {solution.message}")
    end = torch.from_numpy(solution.y[:, -1])
    y1, change = end[: b * dims].reshape(b, dims), end[b * dims :]
    alpha1 = scales(schedule, torch.ones(1, dtype=torch.float64))[0]
    log_p1 = prior_log_density(alpha1 * y1, schedule) + dims * torch.log(alpha1)
    info = {"nfe": float(calls * copies), "calls": calls, "log_snr": [span.low, span.high]}
    return -(log_p1 + change), info


def denoised_divergence(
    denoise: Denoise, y: torch.Tensor, t: torch.Tensor, alpha: float, probe: torch.Tensor, *, exact: bool
) -> tuple[torch.Tensor, torch.Tensor]:
    """``D(alpha y, t)`` and its divergence in ``y`` per item (both float64), from one batched call.

    ``probe`` is ``[P, B, n]``: the basis (``P = n``, ``exact``: ``div = sum_i e_i^T J e_i``) or Rademacher
    vectors (``div ~ mean_p v_p^T J v_p``, Hutchinson 1990). The items are repeated ``P`` times, so one call
    of the network on ``P B`` items and one backward pass give every ``J^T v_p`` at once.
    """
    copies, b, dims = probe.shape
    with torch.enable_grad():
        yr = y.reshape(1, b, dims).expand(copies, b, dims).reshape(copies * b, dims).detach().requires_grad_(True)
        x0 = denoise((alpha * yr).reshape(copies * b, *y.shape[1:]), t).reshape(copies, b, dims)
        (grad,) = torch.autograd.grad((x0 * probe).sum(), yr)
    quad = (grad.reshape(copies, b, dims) * probe).sum(-1).to(torch.float64)
    return x0[0].detach().to(torch.float64), quad.sum(0) if exact else quad.mean(0)
