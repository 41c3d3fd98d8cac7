"""The built-in datasets, registered exactly as a third-party plugin would register its own.

This module must stay torch-free: the CLI lists components without importing torch.
"""

from sandbox_plugins.datasets.params import (
    Cifar10Params,
    DigitsParams,
    GaussianMixtureParams,
    ImageFolderParams,
    TensorFileParams,
    Toy2DParams,
)

from sandbox import hookimpl


@hookimpl
def register_datasets(register):
    register(
        "cifar10",
        "sandbox_plugins.datasets.cifar10:build",
        params=Cifar10Params,
        description="CIFAR-10 RGB photos, 32x32 or resized (torchvision files on disk), validation carved from train",
    )
    register(
        "image_folder",
        "sandbox_plugins.datasets.image_folder:build",
        params=ImageFolderParams,
        description="A folder of your own images (PNG, JPEG, WebP, BMP, TIFF), resized and cached as uint8",
    )
    register(
        "digits",
        "sandbox_plugins.datasets.digits:build",
        params=DigitsParams,
        description="scikit-learn's bundled 8x8 handwritten digits (1,797, offline), scored by a digit classifier",
    )
    register(
        "gaussian_mixture",
        "sandbox_plugins.datasets.gaussian_mixture:build",
        params=GaussianMixtureParams,
        description="Mixture of isotropic Gaussians (2-D or image-shaped) with its exact denoiser E(x0 | x_t)",
    )
    register(
        "toy2d",
        "sandbox_plugins.datasets.toy2d:build",
        params=Toy2DParams,
        description="2-D toy sets (moons, swissroll, checkerboard, gaussians8), scored by sliced Wasserstein",
    )
    register(
        "tensor_file",
        "sandbox_plugins.datasets.tensor_file:build",
        params=TensorFileParams,
        description="Your own arrays of any item shape (.npy, .npz, .pt, .safetensors), normalised per feature",
    )
