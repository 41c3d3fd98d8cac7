"""Samplers against closed forms: the DDPM posterior, the DDIM step, and an analytic Gaussian denoiser."""

from __future__ import annotations

import pytest
import torch

from sandbox.registry import get_registry
from sandbox.sampling import CountingDenoise, forward_variance, transition
from sandbox.testing import build_component, gaussian_denoiser

REGISTRY = get_registry()


def schedule(name="linear", **overrides):
    return build_component("schedule", name, **overrides)


def sampler(name, **overrides):
    return build_component("sampler", name, **overrides)


def test_posterior_is_algorithm_2_of_ddpm():
    """Mean (x_t - beta_t / sqrt(1 - abar_t) eps) / sqrt(alpha_t), variances beta_t and beta-tilde_t."""
    sched = schedule("linear")
    T = 1000
    abar = sched.alpha_bar
    for n in (2, 10, 500, 1000):
        t, s = n / T, (n - 1) / T
        beta = float(sched.betas[n - 1])
        x0 = torch.tensor([0.3, -1.2], dtype=torch.float64)
        eps = torch.tensor([1.1, 0.4], dtype=torch.float64)
        x_t = abar[n].sqrt() * x0 + (1 - abar[n]).sqrt() * eps
        coef_x0, coef_xt, var_small = transition(sched, t, s)
        mean = coef_x0 * x0.double() + coef_xt * x_t
        expected = (x_t - beta / (1 - abar[n]).sqrt() * eps) / (1 - beta) ** 0.5
        assert torch.allclose(mean, expected, rtol=1e-7, atol=1e-9)
        assert forward_variance(sched, t, s) == pytest.approx(beta, rel=1e-7)
        assert var_small == pytest.approx(float((1 - abar[n - 1]) / (1 - abar[n]) * beta), rel=1e-7)


def test_ddim_eta0_step_is_exact_for_a_perfect_denoiser():
    """Song et al. (2021), eq. 12: x_s = sqrt(abar_s) x0 + sqrt(1 - abar_s) eps when x0 and eps are exact."""
    sched = schedule("cosine")
    x0 = torch.randn(8, 3, generator=torch.Generator().manual_seed(1)).double()
    eps = torch.randn(8, 3, generator=torch.Generator().manual_seed(2)).double()
    seen = []

    def perfect(x, t):
        return x0

    def record(info):
        seen.append(info)

    ddim = sampler("ddim", steps=4)
    # start from the exact x_1 built from x0 and eps (noise is scaled by sqrt(alpha^2 + sigma^2) = 1 for VP)
    alpha1, sigma1 = (float(v) for v in sched.alpha_sigma(torch.tensor([1.0], dtype=torch.float64)))
    out = ddim(perfect, alpha1 * x0 + sigma1 * eps, sched, callback=record)
    assert torch.allclose(out, x0, atol=1e-9)
    for info in seen[1:]:
        alpha, sigma = (float(v) for v in sched.alpha_sigma(torch.tensor([info["t"]], dtype=torch.float64)))
        assert torch.allclose(info["x"], alpha * x0 + sigma * eps, atol=1e-9)


def test_ddim_with_eta_1_is_ddpm_with_posterior_variance():
    sched = schedule("linear", num_steps=50)
    mu = torch.tensor([0.5, -0.25])
    denoise = gaussian_denoiser(sched, mu, 0.3)
    noise = torch.randn(64, 2, generator=torch.Generator().manual_seed(0))
    a = sampler("ddim", steps=50, eta=1.0)(denoise, noise, sched, generator=torch.Generator().manual_seed(5))
    b = sampler("ddpm", variance="small")(denoise, noise, sched, generator=torch.Generator().manual_seed(5))
    assert torch.allclose(a, b, atol=1e-5)


@pytest.mark.slow
@pytest.mark.parametrize("schedule_name", REGISTRY.names("schedule"))
@pytest.mark.parametrize("sampler_name", REGISTRY.names("sampler"))
def test_every_sampler_with_every_schedule_recovers_a_gaussian(sampler_name, schedule_name):
    """With the exact denoiser of N(mu, s^2 I), samples must have mean mu and std s."""
    torch.manual_seed(0)
    sched = schedule(schedule_name)
    mu, s = torch.tensor([1.0, -0.5]), 0.5
    counter = CountingDenoise(gaussian_denoiser(sched, mu, s))
    smp = sampler(sampler_name)
    noise = torch.randn(4000, 2, generator=torch.Generator().manual_seed(0))
    out = smp(counter, noise, sched, generator=torch.Generator().manual_seed(1))
    assert out.shape == noise.shape and bool(torch.isfinite(out).all())
    assert torch.allclose(out.mean(0), mu, atol=0.05)
    assert torch.allclose(out.std(0), torch.full((2,), s), atol=0.05)
    assert counter.nfe == smp.nfe(sched)


def test_callback_reports_every_step():
    sched = schedule("linear")
    seen = []
    smp = sampler("ddim", steps=5)
    smp(gaussian_denoiser(sched, torch.zeros(2), 1.0), torch.randn(4, 2), sched, callback=seen.append)
    assert [info["i"] for info in seen] == [0, 1, 2, 3, 4]
    assert set(seen[0]) == {"x", "i", "t", "denoised"}


@pytest.mark.parametrize("sampler_name", REGISTRY.names("sampler"))
def test_nfe_is_exact_when_a_discrete_grid_has_fewer_points(sampler_name):
    """20 steps asked of a 10-point grid: the sampler reports exactly the network evaluations it makes."""
    sched = schedule("linear", num_steps=10)
    for steps in (1, 3, 20):
        smp = sampler(sampler_name, steps=steps)
        counter = CountingDenoise(gaussian_denoiser(sched, torch.zeros(2), 1.0))
        smp(counter, torch.randn(4, 2), sched, generator=torch.Generator().manual_seed(0))
        assert counter.nfe == smp.nfe(sched)


def test_heun_nfe_is_two_per_step_but_the_last():
    sched = schedule("edm")
    assert sampler("heun", steps=18).nfe(sched) == 35  # EDM's CIFAR-10 setting: 18 steps, 35 NFE


@pytest.mark.parametrize("schedule_name", REGISTRY.names("schedule"))
def test_ddim_eta0_is_euler_in_scale_free_coordinates(schedule_name):
    """x_s = alpha_s x0 + sigma_s (x_t - alpha_t x0) / sigma_t is x~_s = x~_t + (sigma~_s - sigma~_t) d."""
    sched = schedule(schedule_name)
    denoise = gaussian_denoiser(sched, torch.tensor([1.0, -0.5], dtype=torch.float64), 0.5)
    noise = torch.randn(16, 2, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    a = sampler("ddim", steps=12, eta=0.0)(denoise, noise, sched)
    b = sampler("euler", steps=12)(denoise, noise, sched)
    assert torch.allclose(a, b, rtol=1e-9, atol=1e-9)


@pytest.mark.parametrize("schedule_name", ["edm", "cosine"])
def test_heun_with_churn_calls_the_network_at_raised_noise_and_still_recovers_a_gaussian(schedule_name):
    """Algorithm 2's churn: sigma~_hat = (1 + gamma) sigma~_i, at a time from the schedule's inverse."""
    sched = schedule(schedule_name)
    mu, s = torch.tensor([1.0, -0.5]), 0.5
    times = []
    exact = gaussian_denoiser(sched, mu, s)

    def denoise(x, t):
        times.append(t)
        return exact(x, t)

    smp = sampler("heun", steps=25, s_churn=10.0, s_tmin=0.05, s_tmax=50.0)
    plain = sampler("heun", steps=25).times(sched)
    seen = []
    out = smp(
        denoise,
        torch.randn(4000, 2, generator=torch.Generator().manual_seed(0)),
        sched,
        generator=torch.Generator().manual_seed(1),
        callback=seen.append,
    )
    assert len(times) == smp.nfe(sched)
    gamma = min(10.0 / 25, 2**0.5 - 1)
    churned = 0
    for info, t in zip(seen, plain):
        alpha, sigma = (float(v) for v in sched.alpha_sigma(torch.tensor([t], dtype=torch.float64)))
        alpha_hat, sigma_hat = (float(v) for v in sched.alpha_sigma(torch.tensor([info["t"]], dtype=torch.float64)))
        if 0.05 <= sigma / alpha <= 50.0:
            assert sigma_hat / alpha_hat == pytest.approx((1 + gamma) * sigma / alpha, rel=1e-6)
            churned += 1
        else:  # outside [s_tmin, s_tmax]: the plain time
            assert info["t"] == t
    assert churned > 5
    assert torch.allclose(out.mean(0), mu, atol=0.05)
    assert torch.allclose(out.std(0), torch.full((2,), s), atol=0.05)
