"""The plugin contract, stated once: every type a plugin implements or receives.

A plugin implements the hooks of :mod:`sandbox.hookspecs`; each hook is
handed a :class:`Register` callable and records components with it. The
``build`` of each kind is called one way:

===========  =======================  ==============================================================
kind         ``build`` call           returns
===========  =======================  ==============================================================
dataset      ``build(params)``        :class:`DataSplits`
schedule     ``build(params)``        a :class:`Schedule`
denoiser     ``build(params, shape)``  a :class:`DenoiserNetwork` (trained), or an
                                      :class:`AnalyticDenoiser` (exact, nothing to train); a class-conditional
                                      run calls ``build(params, shape, num_classes=K)``
sampler      ``build(params)``        a :class:`Sampler`
grid         ``build(params)``        a :class:`Grid` (not a recipe section: ``sampler.grid`` names one)
guidance     ``build(params)``        a :class:`Guidance` (the recipe's optional ``guidance:`` section)
logger       ``build(params)``        an object whose ``@hookimpl`` methods implement run-event hooks,
                                      each given a :class:`RunInfo` (``run.loggers`` enables it)
launcher     ``build(params)``        a :class:`Launcher` (``sandbox sweep --launcher NAME``)
===========  =======================  ==============================================================

``params`` is an instance of the dataclass given at registration (``None``
when the component registered none). A params dataclass checks its own
ranges in ``__post_init__`` and raises :class:`sandbox.errors.ParameterError`
with the field's name; the engine adds the recipe section, so ``sandbox show``
and ``sandbox sweep --dry-run`` reject a bad value before anything is built.

Three things take part in denoising, with three names:

* the **denoiser network** ``F`` (:class:`DenoiserNetwork`), the trainable
  module a recipe's ``denoiser:`` section chooses, sees only
  ``F(c_in x_t, c_noise)``;
* the **preconditioned denoiser** ``D`` (:class:`sandbox.engine.precond.Preconditioned`)
  wraps it with a prediction target's scalings,
  ``D(x_t, t) = c_skip x_t + c_out F(c_in x_t, c_noise)`` (Karras et al. 2022, eq. 7);
* the **denoise function** (:class:`Denoise`) is what a sampler calls:
  ``denoise(x_t, t)`` returns the estimate of ``x_0``.

One module per kind of contract (``registration``, ``data``, ``schedule``, ``denoiser``, ``sampling``,
``runs``); every name is imported from here. This package imports torch; ``import sandbox`` does not (the
names are re-exported from :mod:`sandbox` lazily).
"""

from sandbox.protocols.data import (
    DataSplits,
    ExactX0,
    StoredItems,
    StoredLabels,
    first_tensor,
    item_label,
    null_label,
)
from sandbox.protocols.denoiser import AnalyticDenoiser, Denoise, DenoiserNetwork
from sandbox.protocols.registration import Build, Register
from sandbox.protocols.runs import PHASES, DiffusersExport, JobState, Launcher, RegisterExporter, RunInfo, RunJob
from sandbox.protocols.sampling import Callback, Conditioned, Grid, Guidance, Sampler, StepInfo
from sandbox.protocols.schedule import Schedule

__all__ = [
    "PHASES",
    "AnalyticDenoiser",
    "Build",
    "Callback",
    "Conditioned",
    "DataSplits",
    "Denoise",
    "DenoiserNetwork",
    "DiffusersExport",
    "ExactX0",
    "Grid",
    "Guidance",
    "JobState",
    "Launcher",
    "Register",
    "RegisterExporter",
    "RunInfo",
    "RunJob",
    "Sampler",
    "Schedule",
    "StepInfo",
    "StoredItems",
    "StoredLabels",
    "first_tensor",
    "item_label",
    "null_label",
]
