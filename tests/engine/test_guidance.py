"""Guidance against closed forms: the class-conditional Gaussian mixture's exact denoisers, combined by hand.

Every expected value is computed here from the mixture's means, stds and
weights (Gaussian posteriors and responsibilities, Bishop 2006, eq. 2.116 and
9.13), not by the code under test: ``E[x_0 | x_t, k] = mu_k + g_k (x_t - alpha mu_k)``
with ``g_k = alpha s_k^2 / (alpha^2 s_k^2 + sigma^2)``, and ``E[x_0 | x_t]`` its
average under the responsibilities.
"""

from __future__ import annotations

import functools
import math

import pytest
import torch
from sandbox_plugins.datasets.gaussian_mixture import GaussianMixture
from sandbox_plugins.datasets.metrics import sliced_wasserstein
from sandbox_plugins.guidance.methods import AdaptiveProjected, Autoguidance, ClassifierFree
from sandbox_plugins.guidance.params import APGParams, AutoguidanceParams, CFGParams

from sandbox.engine.condition import Conditions, draw_labels, resolve_classes, steer
from sandbox.engine.precond import exact_denoise
from sandbox.errors import ParameterError, RecipeError
from sandbox.registry import get_registry
from sandbox.sampling import CountingDenoise
from sandbox.targets import TARGETS

pytestmark = pytest.mark.usefixtures("one_thread")  # many tiny ops: one thread is faster

REGISTRY = get_registry()
# fmt: off
MEANS = torch.tensor([[2.0, 0.0], [-1.0, 1.7], [-1.0, -1.7]], dtype=torch.float64)  # well separated (~3.4 apart)
STDS = torch.tensor([0.3, 0.5, 0.2], dtype=torch.float64)
WEIGHTS = torch.tensor([1.0, 2.0, 3.0], dtype=torch.float64)
K = 3                   # classes; K is also the null label
# fmt: on
MIX = GaussianMixture(MEANS, STDS, WEIGHTS, (2,))
WIDE = GaussianMixture(MEANS, 2 * STDS, WEIGHTS, (2,))  # autoguidance's weaker model: the same means, wider


def schedule(name: str = "cosine"):
    """A variance-preserving schedule by default, so alpha != 1 is exercised."""
    component = REGISTRY.get("schedule", name)
    return component.build(component.default_params())


def alpha_sigma(sched, t: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    alpha, sigma = sched.alpha_sigma(torch.as_tensor(t, dtype=torch.float64).reshape(-1))
    return alpha.double().reshape(-1, 1), sigma.double().reshape(-1, 1)


def posterior(
    x: torch.Tensor, alpha: torch.Tensor, sigma: torch.Tensor, stds: torch.Tensor = STDS
) -> tuple[torch.Tensor, torch.Tensor]:
    """``(E[x_0 | x_t, k] [B, K, D], r_k(x_t) [B, K])`` by hand, with the Gaussian densities written out."""
    x, alpha, sigma = x.double(), alpha.reshape(-1, 1, 1), sigma.reshape(-1, 1, 1)
    var = alpha**2 * stds.reshape(1, -1, 1) ** 2 + sigma**2  # [B, K, 1]
    diff = x[:, None, :] - alpha * MEANS[None]  # [B, K, D]
    dim = x.shape[1]
    log_density = -0.5 * dim * torch.log(2 * math.pi * var[..., 0]) - 0.5 * (diff**2).sum(-1) / var[..., 0]
    log_joint = torch.log(WEIGHTS / WEIGHTS.sum()) + log_density
    r = torch.exp(log_joint - log_joint.logsumexp(1, keepdim=True))
    gain = alpha * stds.reshape(1, -1, 1) ** 2 / var
    return MEANS[None] + gain * diff, r


def conditional(x, alpha, sigma, labels, stds=STDS) -> torch.Tensor:
    """``E[x_0 | x_t, c]`` per item, the null label ``K`` giving ``E[x_0 | x_t]``."""
    per_class, r = posterior(x, alpha, sigma, stds)
    mixed = (r[..., None] * per_class).sum(1)
    picked = per_class[torch.arange(len(x)), labels.clamp(max=K - 1)]
    return torch.where((labels == K)[:, None], mixed, picked)


def unconditional(x, alpha, sigma, stds=STDS) -> torch.Tensor:
    return conditional(x, alpha, sigma, torch.full((len(x),), K), stds)


def batch(n: int = 12, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """``(x_t float64 [n, 2], per-item times in (0.1, 0.9), labels cycling over the classes)``."""
    g = torch.Generator().manual_seed(seed)
    x = 2.0 * torch.randn(n, 2, generator=g, dtype=torch.float64)
    t = 0.1 + 0.8 * torch.rand(n, generator=g, dtype=torch.float64)
    return x, t, torch.arange(n) % K


def conditions(sched, labels, **kwargs) -> Conditions:
    return Conditions(exact_denoise(MIX.exact_x0, sched, "x0"), labels, K, sched, **kwargs)


def close(a: torch.Tensor, b: torch.Tensor, atol: float = 1e-9) -> bool:
    return torch.allclose(a.double(), b.double(), rtol=0, atol=atol)


# ------------------------------------------------------------------------------------------------ exact denoisers


@pytest.mark.parametrize("target", TARGETS)
def test_exact_conditional_denoiser_is_each_components_posterior_mean(target):
    sched = schedule()
    x, t, _ = batch(15)
    labels = torch.tensor([0, 1, 2, 3, 3] * 3)  # 3 = K: the null class, the mixture's posterior mean
    alpha, sigma = alpha_sigma(sched, t)
    got = exact_denoise(MIX.exact_x0, sched, target)(x, t, labels)
    # mu_k + g_k (x_t - alpha mu_k), spelled out per item
    s2 = STDS[labels.clamp(max=K - 1)].reshape(-1, 1) ** 2
    g = alpha * s2 / (alpha**2 * s2 + sigma**2)
    mu = MEANS[labels.clamp(max=K - 1)]
    expected = torch.where((labels == K)[:, None], unconditional(x, alpha, sigma), mu + g * (x - alpha * mu))
    assert close(got, expected, 1e-8), (got - expected).abs().max()
    assert not close(got[labels == 0], expected[labels == 1][: int((labels == 0).sum())], 1e-2)  # classes differ
    assert close(exact_denoise(MIX.exact_x0, sched, target)(x, t), unconditional(x, alpha, sigma), 1e-8)


# ------------------------------------------------------------------------------------------------ classifier-free


@pytest.mark.parametrize("w", [0.0, 1.0, 2.5])
def test_cfg_is_the_linear_combination_of_the_exact_estimates(w):
    sched = schedule()
    x, t, labels = batch(12)
    alpha, sigma = alpha_sigma(sched, t)
    expected = (1 - w) * unconditional(x, alpha, sigma) + w * conditional(x, alpha, sigma, labels)
    outs = []
    for batched in (True, False):
        guided = ClassifierFree(CFGParams(scale=w, batched=batched))
        out = guided(conditions(sched, labels), x, t)
        assert close(out, expected), (batched, (out - expected).abs().max())
        outs.append(out)
    assert torch.equal(outs[0], outs[1]) or close(outs[0], outs[1], 1e-12)
    # a scalar time (every item at one noise level) agrees with the per-item form
    one = ClassifierFree(CFGParams(scale=w))(conditions(sched, labels), x, 0.4)
    a, s = alpha_sigma(sched, torch.tensor([0.4], dtype=torch.float64))
    a, s = a.expand(len(x), 1), s.expand(len(x), 1)
    assert close(one, (1 - w) * unconditional(x, a, s) + w * conditional(x, a, s, labels))


SAMPLES_PER_CLASS, REFERENCE = 300, 2000


@functools.cache
def class_floor(k: int, n: int, m: int) -> tuple[torch.Tensor, float]:
    """An exact draw of ``m`` points of component ``k``, and the finite-sample floor against it: the mean
    sliced Wasserstein distance of four independent exact ``n``-point draws of the same component."""
    reference = MIX.sample_component(k, m, torch.Generator().manual_seed(10 + k)).double()
    draws = [MIX.sample_component(k, n, torch.Generator().manual_seed(100 + 10 * j + k)) for j in range(4)]
    return reference, sum(sliced_wasserstein(d.double(), reference) for d in draws) / len(draws)


@pytest.mark.parametrize("sampler", [pytest.param("heun", marks=pytest.mark.slow), "dpmpp_2m"])  # heun: 99 NFE
def test_cfg_at_w_1_samples_each_class_exactly(sampler):
    """Sampled at w = 1 with the exact denoiser, each class lands on its component, within the finite-sample floor.

    Measured (seeds below, cosine schedule, 50 steps, 300 samples per class vs 2,000 exact draws): class SWD
    heun 0.024 / 0.051 / 0.016, dpmpp_2m 0.025 / 0.049 / 0.015 against floors 0.029 / 0.048 / 0.019 (the
    mean SWD of four exact 300-point draws against the same reference; it scales with each component's
    std, 0.3 / 0.5 / 0.2).
    """
    sched = schedule("cosine")
    component = REGISTRY.get("sampler", sampler)
    params = component.default_params()
    params.steps = 50
    n, m = SAMPLES_PER_CLASS, REFERENCE
    labels = draw_labels(n * K, range(K))
    cond = conditions(sched, labels)
    noise = torch.randn(n * K, 2, generator=torch.Generator().manual_seed(1))
    out = component.build(params)(
        steer(ClassifierFree(CFGParams(scale=1.0)), cond), noise, sched, generator=torch.Generator().manual_seed(2)
    )
    unguided = component.build(params)(
        steer(ClassifierFree(CFGParams(scale=0.0)), conditions(sched, labels)),
        noise,
        sched,
        generator=torch.Generator().manual_seed(2),
    )
    for k in range(K):
        reference, floor = class_floor(k, n, m)
        swd = sliced_wasserstein(out[labels == k].double(), reference)
        # 1.5x the floor: the floor itself varies by about +-20% between draws (0.046-0.055 for class 1);
        # +0.01: far below what a wrong answer costs (a component's std off by 20% adds ~0.2 std, 0.04-0.1;
        # the wrong component or the unconditional mixture, checked below, costs more than 1)
        assert swd <= 1.5 * floor + 0.01, (k, swd, floor)
        # the check can fail: at w = 0 (unconditional) most of class k's samples land on other components
        assert ((unguided[labels == k].double() - MEANS[k]).norm(dim=1) > 1.0).float().mean() > 0.5
    assert cond.evaluations == cond.forwards == (99 if sampler == "heun" else 50)  # w = 1: one estimate a step


# ------------------------------------------------------------------------------------------------ the interval


def test_the_interval_guides_only_inside_and_spends_one_evaluation_outside():
    sched = schedule()
    x, _, labels = batch(9)
    times = torch.tensor([0.15, 0.5, 0.95], dtype=torch.float64)
    alpha, sigma = alpha_sigma(sched, times)
    levels = (sigma / alpha).reshape(-1)  # sigma~, increasing with t
    low, high = float(levels[0]), float(levels[1])  # (low, high]: t = 0.5 inside, 0.15 on the low edge, 0.95 above
    w = 2.5
    guidance = ClassifierFree(CFGParams(scale=w, sigma_low=low, sigma_high=high, batched=True))

    def expected_at(t: torch.Tensor, guided: torch.Tensor) -> torch.Tensor:
        a, s = alpha_sigma(sched, t)
        cfg = (1 - w) * unconditional(x, a, s) + w * conditional(x, a, s, labels)
        return torch.where(guided[:, None], cfg, conditional(x, a, s, labels))

    for t, inside in ((times[0], False), (times[1], True), (times[2], False)):
        cond = conditions(sched, labels)
        out = guidance(cond, x, float(t))
        each = torch.full((len(x),), float(t), dtype=torch.float64)
        assert close(out, expected_at(each, torch.full((len(x),), inside))), float(t)
        assert (cond.evaluations, cond.forwards) == ((2, 1) if inside else (1, 1))
    # per item: each item of a mixed batch gets its own
    t = times.repeat(3)
    cond = conditions(sched, labels)
    out = guidance(cond, x, t)
    assert close(out, expected_at(t, torch.tensor([False, True, False] * 3)))
    assert (cond.evaluations, cond.forwards) == (2, 1)


# ------------------------------------------------------------------------------------------------ autoguidance


@pytest.mark.parametrize("labelled", [True, False])
def test_autoguidance_extrapolates_from_the_guide_exactly(labelled):
    sched = schedule()
    x, t, labels = batch(12)
    alpha, sigma = alpha_sigma(sched, t)
    w = 2.0
    guide = exact_denoise(WIDE.exact_x0, sched, "x0")
    if labelled:
        cond = conditions(sched, labels, guide=guide)
        good, bad = conditional(x, alpha, sigma, labels), conditional(x, alpha, sigma, labels, 2 * STDS)
    else:  # an unconditional model: no labels, no null class
        cond = Conditions(exact_denoise(MIX.exact_x0, sched, "x0"), None, None, sched, guide=guide)
        good, bad = unconditional(x, alpha, sigma), unconditional(x, alpha, sigma, 2 * STDS)
    guidance = Autoguidance(AutoguidanceParams(scale=w, guide="unused-here"))
    out = guidance(cond, x, t)
    assert close(out, bad + w * (good - bad))
    assert not close(out, good, 1e-3)  # the guide made a difference
    assert (cond.evaluations, cond.forwards) == (2, 2)  # two different models: two passes


# ------------------------------------------------------------------------------------------------ APG


def apg(w: float = 3.0, **values) -> AdaptiveProjected:
    return AdaptiveProjected(APGParams(scale=w, **values))


def test_apg_with_eta_1_and_no_rescaling_or_momentum_is_cfg():
    sched = schedule()
    x, t, labels = batch(12)
    for w in (0.0, 2.5):
        out = apg(w, eta=1.0)(conditions(sched, labels), x, t)
        cfg = ClassifierFree(CFGParams(scale=w))(conditions(sched, labels), x, t)
        assert close(out, cfg, 1e-10)


def test_apg_with_eta_0_keeps_only_the_part_orthogonal_to_the_conditional_estimate():
    sched = schedule()
    x, t, labels = batch(12)
    alpha, sigma = alpha_sigma(sched, t)
    w = 3.0
    d_c, d_u = conditional(x, alpha, sigma, labels), unconditional(x, alpha, sigma)
    out = apg(w, eta=0.0)(conditions(sched, labels), x, t).double()
    update = out - d_c
    assert (update * d_c).sum(1).abs().max() < 1e-9  # orthogonal to D_c, per item
    delta = d_c - d_u
    orth = delta - (delta * d_c).sum(1, keepdim=True) / (d_c * d_c).sum(1, keepdim=True) * d_c
    assert close(update, (w - 1) * orth)
    assert update.norm(dim=1).max() > 1e-3  # and not trivially zero


def test_apg_norm_threshold_caps_the_update():
    sched = schedule()
    x, t, labels = batch(12)
    alpha, sigma = alpha_sigma(sched, t)
    w, r = 3.0, 0.3
    d_c, d_u = conditional(x, alpha, sigma, labels), unconditional(x, alpha, sigma)
    delta = d_c - d_u
    norms = delta.norm(dim=1)
    assert (norms > r).any() and (norms < r).any()  # the threshold bites on some items, not all
    out = apg(w, eta=1.0, norm_threshold=r)(conditions(sched, labels), x, t).double()
    update = (out - d_c) / (w - 1)
    assert (update.norm(dim=1) <= r + 1e-9).all()
    assert close(update, delta * torch.clamp(r / norms, max=1.0)[:, None])


def test_apg_momentum_adds_the_previous_steps_update():
    sched = schedule()
    x, _, labels = batch(12)
    w, beta = 3.0, -0.5
    guidance = apg(w, eta=1.0, momentum=beta)
    cond = conditions(sched, labels)  # one batch: the momentum runs over its steps
    deltas, outs = [], []
    for t in (0.7, 0.5):
        a, s = alpha_sigma(sched, torch.full((len(x),), t, dtype=torch.float64))
        d_c = conditional(x, a, s, labels)
        deltas.append(d_c - unconditional(x, a, s))
        outs.append((guidance(cond, x, t).double(), d_c))
    (first, d_c1), (second, d_c2) = outs
    assert close(first, d_c1 + (w - 1) * deltas[0])  # no previous step yet
    assert close(second, d_c2 + (w - 1) * (deltas[1] + beta * deltas[0]))
    fresh = guidance(conditions(sched, labels), x, 0.5)  # a new batch starts without momentum
    assert close(fresh, d_c2 + (w - 1) * deltas[1])


# ------------------------------------------------------------------------------------------------ NFE honesty


class Counted:
    """The exact conditional denoiser, counting the calls and the items it really evaluates."""

    def __init__(self, sched):
        self.denoise = exact_denoise(MIX.exact_x0, sched, "x0")
        self.calls = self.items = 0

    def __call__(self, x_t, t, labels):
        self.calls += 1
        self.items += len(x_t)
        return self.denoise(x_t, t, labels)


@pytest.mark.parametrize("guidance", ["cfg batched", "cfg separate", "cfg w=1", "apg batched"])
def test_the_counters_match_the_network_calls(guidance):
    sched = schedule()
    n = 8
    labels = draw_labels(n, range(K))
    model = Counted(sched)
    cond = Conditions(model, labels, K, sched)
    method = {
        "cfg batched": ClassifierFree(CFGParams(scale=2.0, batched=True)),
        "cfg separate": ClassifierFree(CFGParams(scale=2.0, batched=False)),
        "cfg w=1": ClassifierFree(CFGParams(scale=1.0)),
        "apg batched": AdaptiveProjected(APGParams(scale=2.0, batched=True)),
    }[guidance]
    component = REGISTRY.get("sampler", "dpmpp_2m")
    params = component.default_params()
    params.steps = 10
    counter = CountingDenoise(steer(method, cond))
    out = component.build(params)(counter, torch.randn(n, 2, generator=torch.Generator().manual_seed(0)), sched)
    calls = counter.nfe
    assert calls == 10 and out.shape == (n, 2) and bool(torch.isfinite(out).all())
    evaluations, forwards = {
        "cfg batched": (2 * calls, calls),
        "cfg separate": (2 * calls, 2 * calls),
        "cfg w=1": (calls, calls),
        "apg batched": (2 * calls, calls),
    }[guidance]
    assert (cond.evaluations, cond.forwards) == (evaluations, forwards)
    assert (model.calls, model.items) == (forwards, evaluations * n)  # what the model really did


# ------------------------------------------------------------------------------------------------ bad input


@pytest.mark.parametrize("value", [float("nan"), float("inf"), -float("inf"), True, "2"])
def test_a_scale_that_is_not_a_finite_number_is_refused(value):
    with pytest.raises(ParameterError, match="scale") as info:
        CFGParams(scale=value)
    assert info.value.key == "scale"


@pytest.mark.parametrize("low, high", [(1.0, 1.0), (2.0, 1.0), (0.0, 0.0)])
def test_an_empty_interval_is_refused(low, high):
    with pytest.raises(ParameterError, match="sigma_high"):
        CFGParams(sigma_low=low, sigma_high=high)


def test_eval_classes_resolve_names_and_indices_and_refuse_the_rest():
    classes = [str(i) for i in range(9)] + ["nine"]  # ten classes, the last one named
    assert resolve_classes(None, classes) == list(range(10))
    assert resolve_classes([3, "nine", "0", 9], classes) == [3, 9, 0, 9]
    for bad, message in (([10], "out of range"), (["ten"], "unknown class 'ten'"), ([-1], "out of range")):
        with pytest.raises(RecipeError, match=r"'eval\.classes'") as info:
            resolve_classes(bad, classes)
        assert message in str(info.value)
    digits = [f"digit {i}" for i in range(10)]
    with pytest.raises(RecipeError, match=r"'eval\.classes'.*unknown class 'nine'"):
        resolve_classes(["nine"], digits)
    with pytest.raises(RecipeError, match=r"'eval\.classes'"):
        resolve_classes([1.5], digits)
