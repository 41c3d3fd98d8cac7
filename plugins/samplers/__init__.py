"""Built-in samplers."""

from sandbox_plugins.samplers.params import DDIMParams, DDPMParams, DPMPP2MParams, EulerParams, HeunParams

from sandbox import hookimpl


@hookimpl
def register_samplers(register):
    register(
        "ddpm",
        "sandbox_plugins.samplers.ddpm:build",
        params=DDPMParams,
        description="Ancestral sampling, Algorithm 2 of Ho et al. (2020)",
    )
    register(
        "ddim",
        "sandbox_plugins.samplers.ddim:build",
        params=DDIMParams,
        description="DDIM with eta and a step count (Song et al. 2021)",
    )
    register(
        "euler",
        "sandbox_plugins.samplers.euler:build",
        params=EulerParams,
        description="Euler steps on the probability-flow ODE (Karras et al. 2022)",
    )
    register(
        "heun",
        "sandbox_plugins.samplers.heun:build",
        params=HeunParams,
        description="Heun's 2nd-order ODE sampler with churn, Algorithm 2 of Karras et al. (2022)",
    )
    register(
        "dpmpp_2m",
        "sandbox_plugins.samplers.dpmpp_2m:build",
        params=DPMPP2MParams,
        description="DPM-Solver++(2M), multistep with data prediction (Lu et al. 2022)",
    )
