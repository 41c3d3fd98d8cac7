"""Built-in noise schedules."""

from sandbox_plugins.schedules.params import CosineParams, EDMParams, LinearParams, SigmoidParams

from sandbox import hookimpl


@hookimpl
def register_schedules(register):
    register(
        "linear",
        "sandbox_plugins.schedules.linear:build",
        params=LinearParams,
        description="DDPM linear betas, 1e-4 to 0.02 over 1,000 steps (Ho et al. 2020)",
    )
    register(
        "cosine",
        "sandbox_plugins.schedules.cosine:build",
        params=CosineParams,
        description="Cosine alpha-bar, s = 0.008 (Nichol & Dhariwal 2021)",
    )
    register(
        "sigmoid",
        "sandbox_plugins.schedules.sigmoid:build",
        params=SigmoidParams,
        description="Sigmoid alpha-bar, start -3, end 3, tau 1 (Jabri et al. 2022; Chen 2023)",
    )
    register(
        "edm",
        "sandbox_plugins.schedules.edm:build",
        params=EDMParams,
        description="EDM: sigma 0.002 to 80, rho 7, log-normal training (Karras et al. 2022)",
    )
