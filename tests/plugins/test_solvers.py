"""The solvers against their reference algorithms, on matched grids, driven by one fixed denoiser.

Each reference below is written from the published update rule in the variance-exploding form of
k-diffusion (``sigmas`` a list of noise levels, ``model(x, sigma)`` the denoiser), independently of
the plugins, which step through a schedule's times in the scale-free coordinates ``x / alpha``. The
plugins run on the ``cosine`` schedule (alpha != 1) with an explicit grid of times; the references
run on the matching ``sigma~ = sigma / alpha`` of those times. Stochastic samplers draw their noise
from one generator in the same order, so the results must agree to float64 rounding (1e-10 here,
the issue asks for 1e-5). Where diffusers is installed, UniPC is also checked against diffusers'
own ``UniPCMultistepScheduler``.
"""

from __future__ import annotations

import math

import pytest
import torch

from sandbox.registry import get_registry
from sandbox.sampling import CountingDenoise, scale_free
from sandbox.testing import build_component

REGISTRY = get_registry()
TIMES = [1.0, 0.93, 0.81, 0.66, 0.52, 0.4, 0.29, 0.2, 0.12, 0.06, 0.02, 0.0]  # uneven on purpose
SHAPE = (64, 3)
ATOL = 1e-10


def sampler(name, **overrides):
    return build_component("sampler", name, **overrides)


def model(x, sigma):
    """A fixed nonlinear denoiser ``D(x~; sigma~)``: smooth in both arguments, nothing like a Gaussian's."""
    scale = (1.0 + sigma**2) ** 0.5
    return 0.8 * torch.tanh(x / scale) + 0.1 * torch.sin(x) / (1.0 + sigma) + 0.05 * math.cos(sigma)


def run_plugin(name, noise, seed=7, **overrides):
    schedule = REGISTRY.get("schedule", "cosine").build()

    def denoise(x, t):
        alpha, sigma = scale_free(schedule, float(t))
        return model(x / alpha, sigma)

    counter = CountingDenoise(denoise)
    smp = sampler(name, grid=TIMES, **overrides)
    out = smp(counter, noise, schedule, generator=torch.Generator().manual_seed(seed))
    assert counter.nfe == smp.nfe(schedule) == len(TIMES) - 1
    sigmas = [scale_free(schedule, t)[1] for t in TIMES]
    x = noise * (1.0 + sigmas[0] ** 2) ** 0.5  # the prior, x_T / alpha
    return out, sigmas, x


def randn(generator, like):
    return torch.randn(like.shape, generator=generator, dtype=like.dtype)


# ---------------------------------------------------------------- references (k-diffusion's form)


def ref_euler_ancestral(x, sigmas, g, eta=1.0):
    for i in range(len(sigmas) - 1):
        denoised = model(x, sigmas[i])
        s, s_next = sigmas[i], sigmas[i + 1]
        sigma_up = min(s_next, eta * (s_next**2 * (s**2 - s_next**2) / s**2) ** 0.5)
        sigma_down = (sigmas[i + 1] ** 2 - sigma_up**2) ** 0.5
        d = (x - denoised) / sigmas[i]
        x = x + d * (sigma_down - sigmas[i])
        if sigmas[i + 1] > 0:
            x = x + randn(g, x) * sigma_up
    return x


def ref_dpmpp_2m_sde(x, sigmas, g, eta=1.0, solver_type="midpoint"):
    old_denoised, h_last = None, None
    for i in range(len(sigmas) - 1):
        denoised = model(x, sigmas[i])
        if sigmas[i + 1] == 0:
            x = denoised
        else:
            t, s = -math.log(sigmas[i]), -math.log(sigmas[i + 1])
            h = s - t
            eta_h = eta * h
            x = sigmas[i + 1] / sigmas[i] * math.exp(-eta_h) * x + (-math.expm1(-h - eta_h)) * denoised
            if old_denoised is not None:
                r = h_last / h
                if solver_type == "heun":
                    x = x + ((-math.expm1(-h - eta_h)) / (-h - eta_h) + 1) * (1 / r) * (denoised - old_denoised)
                else:
                    x = x + 0.5 * (-math.expm1(-h - eta_h)) * (1 / r) * (denoised - old_denoised)
            if eta:
                x = x + randn(g, x) * sigmas[i + 1] * (-math.expm1(-2 * eta_h)) ** 0.5
            h_last = h
        old_denoised = denoised
    return x


def ref_dpmpp_3m_sde(x, sigmas, g, eta=1.0, d2_factor=1.0):
    """k-diffusion's sample_dpmpp_3m_sde; ``d2_factor = 2`` gives the exponential integrator's third-order term."""
    denoised_1 = denoised_2 = None
    h_1 = h_2 = None
    for i in range(len(sigmas) - 1):
        denoised = model(x, sigmas[i])
        h = None
        if sigmas[i + 1] == 0:
            x = denoised
        else:
            t, s = -math.log(sigmas[i]), -math.log(sigmas[i + 1])
            h = s - t
            h_eta = h * (eta + 1)
            x = math.exp(-h_eta) * x + (-math.expm1(-h_eta)) * denoised
            if h_2 is not None:
                r0, r1 = h_1 / h, h_2 / h
                d1_0 = (denoised - denoised_1) / r0
                d1_1 = (denoised_1 - denoised_2) / r1
                d1 = d1_0 + (d1_0 - d1_1) * r0 / (r0 + r1)
                d2 = d2_factor * (d1_0 - d1_1) / (r0 + r1)
                phi_2 = math.expm1(-h_eta) / h_eta + 1
                phi_3 = phi_2 / h_eta - 0.5
                x = x + phi_2 * d1 - phi_3 * d2
            elif h_1 is not None:
                r = h_1 / h
                d = (denoised - denoised_1) / r
                phi_2 = math.expm1(-h_eta) / h_eta + 1
                x = x + phi_2 * d
            if eta:
                x = x + randn(g, x) * sigmas[i + 1] * (-math.expm1(-2 * h * eta)) ** 0.5
        denoised_1, denoised_2 = denoised, denoised_1
        h_1, h_2 = h, h_1
    return x


def _unipc_system(lambdas, outputs, lam_s0, h, order, variant):
    """Zhao et al. (2023), Algorithm 2's B(h), ratios r_k, divided differences D_k and (R, b)."""
    rks, D1s = [], []
    for k in range(1, order):
        rk = (lambdas[-(k + 1)] - lam_s0) / h
        rks.append(rk)
        D1s.append((outputs[-(k + 1)] - outputs[-1]) / rk)
    rks.append(1.0)
    hh = -h
    h_phi_1 = math.expm1(hh)
    h_phi_k = h_phi_1 / hh - 1
    factorial_i = 1
    B_h = math.expm1(hh) if variant == "bh2" else hh
    R, b = [], []
    for i in range(1, order + 1):
        R.append([rk ** (i - 1) for rk in rks])
        b.append(h_phi_k * factorial_i / B_h)
        factorial_i *= i + 1
        h_phi_k = h_phi_k / hh - 1 / factorial_i
    return D1s, torch.tensor(R, dtype=torch.float64), torch.tensor(b, dtype=torch.float64), h_phi_1, B_h


def ref_unipc(x, sigmas, order=3, variant="bh2"):
    """UniPC with data prediction: UniP-p (Algorithm 2) then UniC-p (Algorithm 3) with the same evaluation;
    diffusers' warm-up (order i + 1 at step i) and lower_order_final (order N - i)."""
    lam = [-math.log(s) if s > 0 else math.inf for s in sigmas]
    n = len(sigmas) - 1
    outputs, lambdas = [], []
    last_x, last_order = None, None
    for i in range(n):
        m = model(x, sigmas[i])
        if i > 0:  # UniC: correct x_i with m, the evaluation at the predicted x_i
            h = lam[i] - lam[i - 1]
            D1s, R, b, h_phi_1, B_h = _unipc_system(lambdas, outputs, lam[i - 1], h, last_order, variant)
            rhos = torch.tensor([0.5]) if last_order == 1 else torch.linalg.solve(R, b)
            corr = sum((float(rhos[k]) * D1s[k] for k in range(len(D1s))), torch.zeros_like(x))
            x = sigmas[i] / sigmas[i - 1] * last_x - h_phi_1 * outputs[-1]
            x = x - B_h * (corr + float(rhos[-1]) * (m - outputs[-1]))
        outputs.append(m)
        lambdas.append(lam[i])
        this_order = min(order, n - i, i + 1)
        last_x, last_order = x, this_order
        if sigmas[i + 1] == 0:
            x = m
            continue
        h = lam[i + 1] - lam[i]
        D1s, R, b, h_phi_1, B_h = _unipc_system(lambdas, outputs, lam[i], h, this_order, variant)
        x = sigmas[i + 1] / sigmas[i] * x - h_phi_1 * m
        if D1s:
            rhos = torch.tensor([0.5]) if this_order == 2 else torch.linalg.solve(R[:-1, :-1], b[:-1])
            x = x - B_h * sum(float(rhos[k]) * D1s[k] for k in range(len(D1s)))
    return x


# ---------------------------------------------------------------- the comparisons


@pytest.fixture
def noise():
    return torch.randn(*SHAPE, generator=torch.Generator().manual_seed(0), dtype=torch.float64)


@pytest.mark.parametrize("eta", [1.0, 0.5, 0.0])
def test_euler_ancestral_is_k_diffusions(noise, eta):
    out, sigmas, x = run_plugin("euler_ancestral", noise, eta=eta)
    ref = ref_euler_ancestral(x, sigmas, torch.Generator().manual_seed(7), eta=eta)
    assert torch.allclose(out, ref, rtol=0, atol=ATOL)


@pytest.mark.parametrize("eta, solver_type", [(1.0, "midpoint"), (1.0, "heun"), (0.5, "midpoint"), (0.0, "heun")])
def test_dpmpp_2m_sde_is_k_diffusions(noise, eta, solver_type):
    out, sigmas, x = run_plugin("dpmpp_2m_sde", noise, eta=eta, solver_type=solver_type)
    ref = ref_dpmpp_2m_sde(x, sigmas, torch.Generator().manual_seed(7), eta=eta, solver_type=solver_type)
    assert torch.allclose(out, ref, rtol=0, atol=ATOL)


@pytest.mark.parametrize("name, eta", [("dpmpp_3m", 0.0), ("dpmpp_3m_sde", 1.0), ("dpmpp_3m", 0.3)])
def test_dpmpp_3m_with_halved_d2_is_k_diffusions_3m_sde(noise, name, eta):
    out, sigmas, x = run_plugin(name, noise, eta=eta, halved_d2=True)
    ref = ref_dpmpp_3m_sde(x, sigmas, torch.Generator().manual_seed(7), eta=eta)
    assert torch.allclose(out, ref, rtol=0, atol=ATOL)


@pytest.mark.parametrize("name, eta", [("dpmpp_3m", 0.0), ("dpmpp_3m_sde", 1.0)])
def test_dpmpp_3m_doubles_k_diffusions_second_difference(noise, name, eta):
    out, sigmas, x = run_plugin(name, noise, eta=eta)
    ref = ref_dpmpp_3m_sde(x, sigmas, torch.Generator().manual_seed(7), eta=eta, d2_factor=2.0)
    assert torch.allclose(out, ref, rtol=0, atol=ATOL)
    upstream = run_plugin(name, noise, eta=eta, halved_d2=True)[0]
    assert not torch.allclose(out, upstream, rtol=0, atol=1e-4)  # the factor matters on this grid


@pytest.mark.parametrize("order", [1, 2, 3])
@pytest.mark.parametrize("variant", ["bh2", "bh1"])
def test_unipc_is_algorithms_2_and_3_of_zhao_et_al(noise, order, variant):
    out, sigmas, x = run_plugin("unipc", noise, order=order, variant=variant)
    assert torch.allclose(out, ref_unipc(x, sigmas, order=order, variant=variant), rtol=0, atol=ATOL)


def test_eta_0_reduces_the_sdes_to_their_odes(noise):
    """No noise: 2M SDE (midpoint) is DPM-Solver++(2M) and Euler ancestral is Euler, on the same grid."""
    assert torch.allclose(run_plugin("dpmpp_2m_sde", noise, eta=0.0)[0], run_plugin("dpmpp_2m", noise)[0], atol=ATOL)
    assert torch.allclose(run_plugin("euler_ancestral", noise, eta=0.0)[0], run_plugin("euler", noise)[0], atol=ATOL)


def test_unip_2_without_its_corrector_is_dpmpp_2m(noise):
    """UniP-2 with bh2 and rho = 1/2 is DPM-Solver++(2M)'s update (Zhao et al. 2023, section 3.3)."""
    a = run_plugin("unipc", noise, order=2, corrector=False, lower_order_final=False)[0]
    b = run_plugin("dpmpp_2m", noise)[0]
    assert torch.allclose(a, b, rtol=0, atol=ATOL)


def test_unipc_matches_diffusers(noise):
    """diffusers' UniPCMultistepScheduler (bh2, order 3, data prediction) on its own 10-step grid."""
    diffusers = pytest.importorskip("diffusers")
    T, steps = 1000, 10
    schedule = REGISTRY.get("schedule", "linear").build()
    scheduler = diffusers.UniPCMultistepScheduler(
        num_train_timesteps=T,
        beta_schedule="linear",
        solver_order=3,
        solver_type="bh2",
        predict_x0=True,
        prediction_type="epsilon",
        timestep_spacing="trailing",
        final_sigmas_type="zero",
        lower_order_final=True,
    )
    scheduler.set_timesteps(steps)
    times = [(int(k) + 1) / T for k in scheduler.timesteps] + [0.0]

    def eps_model(x, t):  # an epsilon network built on the fixed denoiser
        alpha, sigma = (float(v) for v in schedule.alpha_sigma(torch.tensor([t], dtype=torch.float64)))
        return (x - alpha * model(x / alpha, sigma / alpha)) / sigma

    x = noise.clone() * float(scheduler.init_noise_sigma)
    for k in scheduler.timesteps:
        x = scheduler.step(eps_model(x, (int(k) + 1) / T), k, x).prev_sample
    smp = sampler("unipc", grid=times, order=3)

    def denoise(x, t):
        alpha, sigma = scale_free(schedule, float(t))
        return model(x / alpha, sigma)

    out = smp(denoise, noise, schedule)
    assert out.dtype == x.dtype
    assert torch.allclose(out, x, rtol=0, atol=1e-5), float((out - x).abs().max())
