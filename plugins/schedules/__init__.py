"""Built-in noise schedules."""

from sandbox import hookimpl
from sandbox_plugins.schedules.params import CosineParams, LinearParams


@hookimpl
def register_schedules(register):
    register("linear", "sandbox_plugins.schedules.linear:build", params=LinearParams,
             description="DDPM linear betas, 1e-4 to 0.02 over 1,000 steps (Ho et al. 2020)")
    register("cosine", "sandbox_plugins.schedules.cosine:build", params=CosineParams,
             description="Cosine alpha-bar, s = 0.008 (Nichol & Dhariwal 2021)")
