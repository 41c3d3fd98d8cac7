"""Built-in time grids: where a sampler evaluates the network (``sampler.grid``), separate from the solver."""

from sandbox_plugins.grids.params import KarrasGridParams

from sandbox import hookimpl


@hookimpl
def register_grids(register):
    register(
        "schedule",
        "sandbox_plugins.grids.spacings:build_schedule",
        description="The schedule's own timesteps(steps) (edm: eq. 5 of Karras et al. 2022; DDPM grids: trailing)",
    )
    register(
        "uniform_t",
        "sandbox_plugins.grids.spacings:build_uniform_t",
        description="Evenly spaced in t from 1 to 0 (the time-uniform steps of Lu et al. 2022)",
    )
    register(
        "uniform_log_snr",
        "sandbox_plugins.grids.spacings:build_uniform_log_snr",
        description="Evenly spaced in log-SNR down to the lowest noise level, then 0 (Lu et al. 2022, 'logSNR')",
    )
    register(
        "karras",
        "sandbox_plugins.grids.spacings:build_karras",
        params=KarrasGridParams,
        description="Noise levels by eq. 5 of Karras et al. (2022) with rho, then 0",
    )
    register(
        "trailing",
        "sandbox_plugins.grids.spacings:build_trailing",
        description="diffusers' 'trailing' timestep spacing on the T-point grid (Lin et al. 2024, table 2)",
    )
    register(
        "leading",
        "sandbox_plugins.grids.spacings:build_leading",
        description="diffusers' 'leading' timestep spacing on the T-point grid (starts below t = 1)",
    )
