"""Built-in samplers."""

from sandbox import hookimpl
from sandbox_plugins.samplers.params import DDIMParams, DDPMParams


@hookimpl
def register_samplers(register):
    register("ddpm", "sandbox_plugins.samplers.ddpm:build", params=DDPMParams,
             description="Ancestral sampling, Algorithm 2 of Ho et al. (2020)")
    register("ddim", "sandbox_plugins.samplers.ddim:build", params=DDIMParams,
             description="DDIM with eta and a step count (Song et al. 2021)")
