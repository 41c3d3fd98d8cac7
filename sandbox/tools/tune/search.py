"""The searches over a grid's free numbers ``z`` (:mod:`sandbox.tools.tune.space`).

Both minimise the mean squared distance to the reference and hand every point they accept to ``accept``,
which may stop them (early stopping on held-out noise, :mod:`sandbox.tools.tune.grid`):

- :func:`levenberg_marquardt`, the default: the objective is a sum of squares ``|r(z)|^2`` of the
  residuals ``r = (x_grid - x_ref) / sqrt(n)``, so Gauss-Newton's model ``|r + J dz|^2`` needs only the
  Jacobian ``J``, here by forward differences (``len(z)`` evaluations), and converges in a few steps where
  Nelder-Mead in 19 dimensions does not in 200 evaluations. The step is damped as Levenberg (1944) and
  Marquardt (1963) do, ``(J^T J + mu diag(J^T J)) dz = -J^T r``, ``mu`` shrunk after a step that lowers
  the objective and grown after one that does not (Nocedal & Wright 2006, section 10.3).
- :func:`nelder_mead`: scipy's simplex search (adaptive parameters above 3 dimensions, Gao & Han 2012),
  kept to compare against.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable
from typing import Optional

import torch

Residuals = Callable[[list[float]], Optional[torch.Tensor]]  # None: no valid grid, or not finite
Accept = Callable[[list[float], float, int], bool]  # (z, objective, evaluations so far) -> stop the search


class _Stop(Exception):
    pass


def levenberg_marquardt(residuals: Residuals, z0: list[float], budget: int, accept: Accept, step: float) -> int:
    """Damped Gauss-Newton from ``z0`` for at most ``budget`` evaluations of ``residuals``; forward differences
    of ``step`` (times ``max(1, |z_i|)``). Returns the evaluations used."""
    z = torch.tensor(z0, dtype=torch.float64)
    start = residuals(z.tolist())
    used, dims = 1, len(z)
    if start is None or dims == 0:
        return used
    r: torch.Tensor = start
    value, mu = float(r @ r), 1e-3
    while used + dims + 1 <= budget:
        jacobian = torch.zeros(len(r), dims, dtype=torch.float64)
        for i in range(dims):
            h = step * max(1.0, abs(float(z[i])))
            moved = z.clone()
            moved[i] += h
            r_i = residuals(moved.tolist())
            used += 1
            if r_i is not None:
                jacobian[:, i] = (r_i - r) / h
        gradient, curvature = jacobian.T @ r, jacobian.T @ jacobian
        scale = torch.diag(curvature.diagonal().clamp_min(1e-12 * float(curvature.diagonal().max()) + 1e-300))
        while True:
            if used >= budget:
                return used
            try:
                dz = torch.linalg.solve(curvature + mu * scale, -gradient)
            except RuntimeError:  # singular: damp harder
                mu *= 4.0
                continue
            r_new = residuals((z + dz).tolist())
            used += 1
            value_new = float(r_new @ r_new) if r_new is not None else float("inf")
            if r_new is not None and value_new < value:
                decrease = (value - value_new) / value
                z, r, value, mu = z + dz, r_new, value_new, max(mu / 3.0, 1e-9)
                if accept(z.tolist(), value, used):
                    return used
                break
            mu *= 4.0
            if mu > 1e10:  # no step along the gradient lowers it: a (local) minimum
                return used
        if decrease < 1e-6:  # converged
            return used
    return used


def nelder_mead(objective: Callable[[list[float]], float], z0: list[float], budget: int, accept: Accept) -> int:
    """scipy's Nelder-Mead for at most ``budget`` evaluations; ``accept`` sees each new best point."""
    from scipy.optimize import minimize  # scipy comes with scikit-learn

    best, used = [float("inf")], [0]

    def f(z: list[float]) -> float:
        used[0] += 1
        value = objective(list(z))
        if value < best[0]:
            best[0] = value
            if accept(list(z), value, used[0]):
                raise _Stop
        return value

    if budget:
        with contextlib.suppress(_Stop):
            minimize(f, z0, method="Nelder-Mead", options={"maxfev": budget, "adaptive": len(z0) > 3})
    return used[0]


SEARCHES = ("gauss-newton", "nelder-mead")
