"""Built-in samplers."""

from sandbox_plugins.samplers.params import (
    DDIMParams,
    DDPMParams,
    DPMPP2MParams,
    DPMPP2MSDEParams,
    DPMPP3MParams,
    DPMPP3MSDEParams,
    EulerAncestralParams,
    EulerParams,
    HeunParams,
    UniPCParams,
)

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
    register(
        "euler_ancestral",
        "sandbox_plugins.samplers.euler_ancestral:build",
        params=EulerAncestralParams,
        description="Euler ancestral: an Euler step, then fresh noise (k-diffusion's sample_euler_ancestral)",
    )
    register(
        "dpmpp_2m_sde",
        "sandbox_plugins.samplers.dpmpp_sde:build_2m_sde",
        params=DPMPP2MSDEParams,
        description="DPM-Solver++(2M) SDE (Lu et al. 2022; k-diffusion's sample_dpmpp_2m_sde)",
    )
    register(
        "dpmpp_3m",
        "sandbox_plugins.samplers.dpmpp_sde:build_3m",
        params=DPMPP3MParams,
        description="DPM-Solver++(3M), third-order multistep ODE solver with data prediction (Lu et al. 2022)",
    )
    register(
        "dpmpp_3m_sde",
        "sandbox_plugins.samplers.dpmpp_sde:build_3m",
        params=DPMPP3MSDEParams,
        description="DPM-Solver++(3M) SDE (k-diffusion's sample_dpmpp_3m_sde): dpmpp_3m with eta = 1",
    )
    register(
        "unipc",
        "sandbox_plugins.samplers.unipc:build",
        params=UniPCParams,
        description="UniPC-3, bh2, predictor-corrector with data prediction (Zhao et al. 2023)",
    )
