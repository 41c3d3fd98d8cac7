"""A conformance kit: check your plugin's component against the sandbox's contracts.

Call the checks from your plugin's own tests, by registered name (the
component is built through the registry, as a recipe would build it) or on
an object you built yourself::

    from sandbox.testing import check_schedule

    def test_loglinear_conforms():
        check_schedule("loglinear")
        check_schedule("loglinear", LogLinearParams(lambda_min=-12.0))

The contracts themselves are stated in :mod:`sandbox.protocols`. Each
``check_*`` raises :class:`AssertionError` naming the component, the broken
rule, and the step count and tolerance it used, and returns the built
component when it conforms:

==================  ==========================================================
check               contract
==================  ==========================================================
``check_schedule``  ``alpha_sigma`` keeps ``t``'s shape, finite, non-negative,
                    ``sigma > 0`` for t > 0 and ``alpha > 0`` for t < 1;
                    ``log_snr`` non-increasing and equal to
                    ``2 log(alpha / sigma)``; ``timesteps(n)`` descends from 1
                    to exactly 0 in at most n + 1 points; ``sample_t`` in
                    (0, 1] and seeded by its generator; ``t_from_log_snr``
                    inverts ``log_snr``; every built-in sampler recovers a
                    Gaussian with its exact denoiser.
``check_sampler``   the signature of :class:`sandbox.protocols.Sampler`;
                    ``sampler(denoise, noise, schedule, *, generator,
                    callback)`` returns ``noise``'s shape, finite, leaves
                    ``noise`` alone; one callback dict ``{"x", "i", "t",
                    "denoised"}`` per step; same generator seed, same output
                    (whatever the global RNG); ``nfe(schedule)`` denoiser
                    calls; recovers a Gaussian on every built-in schedule.
``check_denoiser``  ``forward(x, c_noise)`` keeps ``x``'s shape, finite;
                    gradients reach every parameter within a few steps; the
                    output depends on ``c_noise``. An analytic denoiser
                    (:class:`sandbox.protocols.AnalyticDenoiser`) instead
                    binds to ``data`` and gives a finite ``E[x_0 | x_t]``.
``check_grid``      ``grid(schedule, steps)`` on every built-in schedule and a
                    range of steps: a 1-D float tensor of 2 to ``steps + 1``
                    strictly descending times, at most 1, the last exactly 0,
                    the same on a second call; every built-in sampler steps
                    on it with exactly ``nfe(schedule)`` denoiser calls.
``check_dataset``   ``build`` returns :class:`sandbox.protocols.DataSplits`;
                    non-empty splits of float items of ``shape``; ``render``
                    gives a [3, H, W] picture in [0, 1]; ``evaluate`` a dict
                    of finite floats.
==================  ==========================================================

Helpers for tests: :func:`gaussian_denoiser` (the exact ``E[x_0 | x_t]`` of a
Gaussian), :func:`register_plugin` (a throwaway plugin, always unregistered)
and :func:`fake_distribution` (an installed distribution faked through
``importlib.metadata.distributions``). This module imports torch.
"""

from sandbox.testing.build import build_component, built_in
from sandbox.testing.datasets import check_dataset
from sandbox.testing.denoisers import check_denoiser
from sandbox.testing.gaussian import gaussian_denoiser
from sandbox.testing.grids import check_grid
from sandbox.testing.plugins import fake_distribution, register_plugin
from sandbox.testing.samplers import CALLBACK_KEYS, check_sampler
from sandbox.testing.schedules import check_schedule

__all__ = [
    "CALLBACK_KEYS",
    "build_component",
    "built_in",
    "check_dataset",
    "check_denoiser",
    "check_grid",
    "check_sampler",
    "check_schedule",
    "fake_distribution",
    "gaussian_denoiser",
    "register_plugin",
]
