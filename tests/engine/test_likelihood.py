"""The likelihood estimators against exact answers: Gaussian data and Gaussian mixtures with their exact denoisers.

Tolerances: the ODE likelihood is solved with RK45 at rtol = atol = 1e-6 over a log-SNR interval of about 30,
where its error measured at most 1e-4 nats per item on 4-D Gaussian data, 3e-5 on the 2-D mixture and 2.3e-3
on the 64-D one (an error that grows with the dimension, as the log-determinant it integrates does), so
:func:`ode_tolerance` allows 1e-4 nats per coordinate (at least 1e-3 nats): a margin of 3 to 30. The bounds are
Monte Carlo estimates: "below the likelihood" is checked as NLL >= exact minus 3 standard errors, over thousands
of items.
"""

from __future__ import annotations

import math

import pytest
import torch
from sandbox_plugins.datasets.gaussian_mixture import mixture
from sandbox_plugins.datasets.params import GaussianMixtureParams
from sandbox_plugins.schedules.cosine import build as cosine
from sandbox_plugins.schedules.params import CosineParams

from sandbox.engine.likelihood.elbo import elbo
from sandbox.engine.likelihood.estimate import LogSnrRange
from sandbox.engine.likelihood.ode import denoised_divergence, ode_nll
from sandbox.engine.likelihood.quantise import decoder_log_snr, discretised_gaussian_nll, level_values, mass_bound
from sandbox.engine.likelihood.vlb import vlb
from sandbox.engine.precond import exact_denoise
from sandbox.schedule import DiscreteSchedule
from sandbox.testing import gaussian_denoiser

pytestmark = pytest.mark.usefixtures("one_thread")  # many small solver steps: one thread, immune to a busy machine


def ode_tolerance(dims: int) -> float:
    """Nats per item allowed between the ODE likelihood at rtol = atol = 1e-6 and the exact log-density."""
    return max(1e-3, 1e-4 * dims)


def gaussian_nll(x: torch.Tensor, mu: torch.Tensor, var: float) -> torch.Tensor:
    """``-log N(x; mu, var I)`` per item, written out."""
    d = x.shape[1]
    return 0.5 * d * math.log(2 * math.pi * var) + ((x - mu) ** 2).sum(1) / (2 * var)


def gaussian_case(n: int = 200, dims: int = 4, seed: int = 0):
    schedule = cosine(CosineParams())
    mu, s = torch.linspace(-0.5, 0.5, dims, dtype=torch.float64), 0.5
    x = mu + s * torch.randn(n, dims, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)
    return schedule, mu, s, x, gaussian_denoiser(schedule, mu, s)


def within_bound(nats: torch.Tensor, exact: torch.Tensor) -> tuple[float, float]:
    """The mean gap ``bound - exact`` and its standard error."""
    gap = nats - exact
    return float(gap.mean()), float(gap.std() / math.sqrt(len(gap)))


# ------------------------------------------------------------------------------------------------ the ODE


def test_ode_likelihood_of_gaussian_data_is_its_exact_log_density():
    schedule, mu, s, x, denoise = gaussian_case()
    span = LogSnrRange.of(schedule, 12.0)
    nats, info = ode_nll(denoise, schedule, x, span=span, rtol=1e-6, atol=1e-6, generator=torch.Generator())
    smoothed = s**2 + math.exp(-span.high)  # the density at the data's end: N(mu, s^2 + sigma~_max^2)
    assert (nats - gaussian_nll(x, mu, smoothed)).abs().max() < ode_tolerance(x.shape[1])
    assert info["nfe"] == info["calls"] * x.shape[1]  # exact divergence: one copy of the items per coordinate


@pytest.mark.parametrize("dim, components", [(2, 8), (64, 10)])
def test_ode_likelihood_with_the_exact_denoiser_matches_the_mixture_per_item(dim, components):
    mix = mixture(GaussianMixtureParams(dim=dim, components=components, std=0.1))
    schedule = cosine(CosineParams())
    denoise = exact_denoise(mix.exact_x0, schedule, "x0")
    x = mix.sample(40 if dim == 2 else 12, torch.Generator().manual_seed(1)).double()
    span = LogSnrRange.of(schedule, 12.0)
    nats, _ = ode_nll(denoise, schedule, x, span=span, rtol=1e-6, atol=1e-6, generator=torch.Generator())
    exact = -mix.log_density(x, math.exp(-span.high / 2))
    assert (nats - exact).abs().max() < ode_tolerance(dim)
    assert abs(float((nats - exact).mean())) < ode_tolerance(dim) / 4


def test_hutchinsons_divergence_is_unbiased():
    """The mean of Rademacher probes' ``v^T J v`` matches the exact divergence within its standard error."""
    mix = mixture(GaussianMixtureParams(dim=8, components=4, std=0.2))
    schedule = cosine(CosineParams())
    denoise = exact_denoise(mix.exact_x0, schedule, "x0")
    y = mix.sample(3, torch.Generator().manual_seed(2)).double() * 1.3
    t = torch.tensor(0.4, dtype=torch.float64)
    alpha = float(schedule.alpha_sigma(t.reshape(1))[0])
    basis = torch.eye(8, dtype=torch.float64)[:, None, :].expand(8, 3, 8)
    _, exact = denoised_divergence(denoise, y, t, alpha, basis, exact=True)
    probes = (2 * torch.randint(0, 2, (1000, 3, 8), generator=torch.Generator().manual_seed(3)) - 1).double()
    values = torch.stack(
        [denoised_divergence(denoise, y, t, alpha, p, exact=False)[1] for p in probes.split(1)]
    ).squeeze(1)
    mean, stderr = values.mean(0), values.std(0) / math.sqrt(len(values))
    assert ((mean - exact).abs() < 4 * stderr).all(), (mean, exact, stderr)
    assert (values.std(0) > 0).all()  # a mixture's Jacobian is not a multiple of the identity: the probes vary


# ------------------------------------------------------------------------------------------------ the bounds


@pytest.mark.slow
def test_both_bounds_lie_above_the_exact_nll_of_gaussian_data():
    schedule, mu, s, x, denoise = gaussian_case(n=4000, dims=2, seed=4)
    exact = gaussian_nll(x, mu, s**2)
    span = LogSnrRange.of(schedule, 12.0)
    g = torch.Generator().manual_seed(5)
    for estimate in (
        elbo(denoise, schedule, x, span=span, draws=16, generator=g),
        vlb(denoise, schedule, x, variance="beta", generator=g),
        vlb(denoise, schedule, x, variance="posterior", generator=g),
    ):
        gap, stderr = within_bound(estimate.nats, exact)
        assert gap > -3 * stderr, (estimate.estimator, estimate.settings, gap, stderr)
        assert estimate.bound


@pytest.mark.slow
def test_the_elbos_control_variate_keeps_its_mean_and_cuts_its_spread():
    """On Gaussian data the high-SNR error is the noise itself: the control variate removes most of the spread."""
    schedule, mu, s, x, denoise = gaussian_case(n=2000, dims=2, seed=10)
    exact = gaussian_nll(x, mu, s**2)
    span = LogSnrRange.of(schedule, 12.0)
    plain, steered = (
        elbo(denoise, schedule, x, span=span, draws=16, generator=torch.Generator().manual_seed(11), sigma_data=sd)
        for sd in (None, s)
    )
    (gap_plain, se_plain), (gap_cv, se_cv) = within_bound(plain.nats, exact), within_bound(steered.nats, exact)
    assert abs(gap_plain - gap_cv) < 3 * math.hypot(se_plain, se_cv)  # the same mean: it is unbiased
    assert se_cv < se_plain / 2
    assert gap_cv > -3 * se_cv


@pytest.mark.slow
def test_the_vlbs_gap_shrinks_as_its_steps_are_refined():
    """DDPM's bound with beta_t on T = 10, 100, 1000 steps of the cosine schedule: the gap to the exact NLL falls.

    With the posterior's beta~_t the gap does not vanish: near the data ``beta~_n = (n - 1) / n beta_n``, and each
    early step costs about ``1 / (2 n (n - 1))`` nats per coordinate more, about 1/2 in all, at any T."""
    mu, s = torch.zeros(2, dtype=torch.float64), 0.5
    x = s * torch.randn(10000, 2, generator=torch.Generator().manual_seed(6), dtype=torch.float64)
    exact = gaussian_nll(x, mu, s**2)
    gaps, posterior = [], []
    for steps in (10, 100, 1000):
        schedule = cosine(CosineParams(num_steps=steps))
        denoise = gaussian_denoiser(schedule, mu, s)
        gaps.append(within_bound(vlb(denoise, schedule, x, variance="beta", generator=torch.Generator()).nats, exact))
        estimate = vlb(denoise, schedule, x, variance="posterior", generator=torch.Generator())
        posterior.append(within_bound(estimate.nats, exact))
    assert gaps[0][0] > gaps[1][0] + 3 * gaps[1][1]
    assert gaps[2][0] < gaps[0][0] - 3 * gaps[2][1]
    assert all(gap > -3 * stderr for gap, stderr in gaps)
    assert all(0.5 < gap < 2.0 for gap, _ in posterior)  # about 1/2 nat per coordinate, 2 coordinates


def test_the_elbos_gap_shrinks_as_its_log_snr_range_widens():
    """The continuous ELBO truncated at log-SNR 2, 6, 10: the decoder's share of the gap falls with the range."""
    schedule, mu, s, x, denoise = gaussian_case(n=10000, dims=2, seed=7)
    exact = gaussian_nll(x, mu, s**2)
    gaps = []
    for top in (2.0, 6.0, 10.0):
        span = LogSnrRange.of(schedule, top)
        estimate = elbo(denoise, schedule, x, span=span, draws=32, generator=torch.Generator().manual_seed(8))
        gaps.append(within_bound(estimate.nats, exact))
    assert gaps[0][0] > gaps[1][0] + 3 * gaps[1][1]
    assert gaps[2][0] < gaps[0][0] - 3 * gaps[2][1]
    assert all(gap > -3 * stderr for gap, stderr in gaps)


def test_the_vlb_of_the_exact_posterior_mean_matches_its_closed_form():
    """Gaussian data N(mu, s^2) and D = E[x_0 | x_t]: each KL term's expectation over the data is closed-form,
    ``1/2 c_n^2 Var[x_0 | x_n] / beta_n`` plus the variance mismatch, written here from the betas alone."""
    steps, dims, s = 50, 3, 0.6
    betas = torch.linspace(1e-3, 0.3, steps, dtype=torch.float64)
    schedule = DiscreteSchedule(betas)
    mu = torch.tensor([0.2, -0.1, 0.4], dtype=torch.float64)
    x = mu + s * torch.randn(20000, dims, generator=torch.Generator().manual_seed(9), dtype=torch.float64)
    estimate = vlb(gaussian_denoiser(schedule, mu, s), schedule, x, variance="beta", generator=torch.Generator())
    ab = torch.cumprod(1 - betas, 0)
    post_var = lambda n: s**2 * (1 - ab[n - 1]) / (ab[n - 1] * s**2 + 1 - ab[n - 1])  # Var[x_0 | x_n], n = 1..T
    expected = 0.0
    for n in range(2, steps + 1):
        beta, ab_n, ab_prev = float(betas[n - 1]), float(ab[n - 1]), float(ab[n - 2])
        var_q = (1 - ab_prev) / (1 - ab_n) * beta  # beta~_n
        coef = math.sqrt(ab_prev) * beta / (1 - ab_n)
        r = var_q / beta
        expected += dims * 0.5 * (r - 1 - math.log(r) + coef**2 * float(post_var(n)) / beta)
    beta1 = float(betas[0])
    expected += dims * (0.5 * math.log(2 * math.pi * beta1) + float(post_var(1)) / (2 * beta1))
    a_t, var_t = math.sqrt(float(ab[-1])), 1 - float(ab[-1])
    v = a_t**2 + var_t
    second = float((mu**2).sum()) + dims * s**2
    expected += 0.5 * (dims * (var_t / v - 1 - math.log(var_t / v)) + a_t**2 * second / v)
    mean, stderr = float(estimate.nats.mean()), float(estimate.nats.std() / math.sqrt(len(x)))
    assert abs(mean - expected) < 4 * stderr + 1e-9, (mean, expected, stderr)


def test_each_vlb_term_against_a_hand_computation():
    """T = 2 steps, one coordinate, 4 levels, a model that always answers 0.2: every term by hand."""
    schedule = DiscreteSchedule(torch.tensor([0.1, 0.5], dtype=torch.float64))
    seen = []

    def model(x_t, t):
        seen.append(float(t))
        return torch.full_like(x_t, 0.2)

    x0 = torch.tensor([[1 / 3]], dtype=torch.float64)
    est = vlb(model, schedule, x0, variance="posterior", generator=torch.Generator().manual_seed(0), levels=4)
    assert seen == [1.0, 0.5]  # the one KL term at t_2, then the decoder at t_1
    ab1, ab2 = 0.9, 0.9 * 0.5
    beta2 = 0.5
    var_q = (1 - ab1) / (1 - ab2) * beta2
    coef_x0 = math.sqrt(ab1) * beta2 / (1 - ab2)
    l1 = 0.5 * coef_x0**2 * (1 / 3 - 0.2) ** 2 / var_q  # equal variances: the mean term alone
    std = math.sqrt(var_q)  # the decoder's variance: beta~_2 (beta~_1 = 0)
    phi = lambda z: 0.5 * (1 + math.erf(z / math.sqrt(2)))
    l0 = -math.log(phi((1 / 3 + 1 / 3 - 0.2) / std) - phi((1 / 3 - 1 / 3 - 0.2) / std))  # bin [0, 2/3]
    lt = 0.5 * ((1 - ab2) - 1 - math.log(1 - ab2) + ab2 * (1 / 3) ** 2)  # KL(N(sqrt(ab2) x, 1 - ab2) || N(0, 1))
    assert est.terms["diffusion"].item() == pytest.approx(l1, rel=1e-12)
    assert est.terms["reconstruction"].item() == pytest.approx(l0, rel=1e-10)
    assert est.terms["prior"].item() == pytest.approx(lt, rel=1e-12)
    assert est.nats.item() == pytest.approx(l1 + l0 + lt, rel=1e-12)
    assert est.per_dim().item() == pytest.approx((l1 + l0 + lt) / math.log(2), rel=1e-12)  # bits: levels given


# ------------------------------------------------------------------------------------------------ discrete data


def test_the_discretised_gaussian_is_a_probability_over_the_levels():
    values = level_values(17)
    for mean, std in ((0.1, 0.05), (-0.93, 0.3), (0.5, 1e-4), (2.0, 0.01)):
        nll = discretised_gaussian_nll(values, torch.full_like(values, mean), torch.full_like(values, std), 17)
        assert float(torch.exp(-nll).sum()) == pytest.approx(1.0, abs=1e-9)


def test_dequantisation_bounds_the_mass_of_a_uniform_density():
    """A density uniform on [-1 - d/2, 1 + d/2] gives each of L levels mass 1 / L exactly: the bound is tight."""
    levels, dims = 17, 5
    width = 2 + 2 / (levels - 1)
    density_nats = torch.full((3,), dims * math.log(width))
    assert mass_bound(density_nats, dims, levels) == pytest.approx(torch.full((3,), dims * math.log(levels)))


def test_discrete_data_ends_every_schedule_where_a_value_is_read_back_with_certainty():
    """sigma~ a sixth of the bin: log-SNR 13.3 for 8-bit data (where VDM's learned schedule ends on CIFAR-10), 7.74
    for the digits' 17 levels; every built-in discrete schedule reaches it, so they share one interval's end."""
    from sandbox.testing import build_component

    assert decoder_log_snr(256) == pytest.approx(-2 * math.log(2 / 255 / 6)) == pytest.approx(13.28, abs=0.01)
    assert decoder_log_snr(17) == pytest.approx(-2 * math.log(0.125 / 6))
    for name in ("linear", "cosine", "sigmoid"):
        span = LogSnrRange.of(build_component("schedule", name), decoder_log_snr(17))
        assert span.high == decoder_log_snr(17) and 0 < span.t_min < 0.05
