"""Built-in denoiser networks: DDPM UNet, full-resolution ResNet, residual MLP, and the closed-form oracle.

Registered lazily by ``"module:attr"``: importing this plugin does not import torch.
"""

from sandbox_plugins.denoisers.params import MLPParams, ResNetParams, UNetParams

from sandbox import hookimpl


@hookimpl
def register_denoisers(register):
    register(
        "unet",
        "sandbox_plugins.denoisers.unet:build",
        params=UNetParams,
        description="DDPM UNet of Ho et al. (2020); defaults are their 35.7M-parameter CIFAR-10 model",
    )
    register(
        "resnet",
        "sandbox_plugins.denoisers.resnet:build",
        params=ResNetParams,
        description="Residual conv stack at full resolution with noise-level conditioning (no down-sampling)",
    )
    register(
        "mlp",
        "sandbox_plugins.denoisers.mlp:build",
        params=MLPParams,
        description="Residual MLP on the flattened item, for 2-D toy data and other small shapes",
    )
    register(
        "oracle",
        "sandbox_plugins.denoisers.oracle:build",
        description="Exact E(x0 | x_t) of a dataset with a closed form (gaussian_mixture); no parameters, no training",
    )


@hookimpl
def register_exporters(register):
    register("diffusers", "unet", "sandbox_plugins.denoisers.diffusers_export:to_diffusers")
