"""Typed parameters of the built-in denoisers (torch-free, so the CLI can list them cheaply).

The recipe loader checks a ``denoiser:`` section against these with
``OmegaConf.structured``; the defaults of :class:`UNetParams` are the CIFAR-10
configuration of Ho et al. (2020), "Denoising Diffusion Probabilistic Models",
appendix B (35.7M parameters on 3x32x32 images).
"""

from dataclasses import dataclass, field


@dataclass
class UNetParams:
    """DDPM UNet of Ho et al. (2020); defaults are their CIFAR-10 model."""

    channels: int = 128                     # base width: channels of conv_in and of level 0 (x channel_mult[0])
    channel_mult: list[int] = field(default_factory=lambda: [1, 2, 2, 2])  # width multiplier per resolution level; each level after the first halves H and W
    num_res_blocks: int = 2                 # residual blocks per level on the way down (num_res_blocks + 1 on the way up)
    attention_resolutions: list[int] = field(default_factory=lambda: [16])  # feature-map heights (pixels) that get self-attention after each residual block
    dropout: float = 0.1                    # dropout probability inside each residual block
    num_heads: int = 1                      # attention heads; must divide the channels at every attention level
    groups: int = 32                        # GroupNorm groups; must divide channels x every channel_mult entry


@dataclass
class ResNetParams:
    """Residual stack at full resolution: no down-sampling."""

    channels: int = 64                      # width of every residual block
    num_blocks: int = 6                     # residual blocks, each conditioned on the noise level
    dropout: float = 0.0                    # dropout probability inside each residual block
    attention: bool = False                 # one self-attention block over all pixels after the first half of the blocks
    num_heads: int = 1                      # attention heads when attention is on; must divide channels
    groups: int = 32                        # GroupNorm groups; must divide channels


@dataclass
class MLPParams:
    """Residual MLP on the flattened data item (for 2-D toy data and any small shape)."""

    hidden: int = 128                       # width of the hidden layers and of the noise-level embedding
    layers: int = 3                         # residual blocks of LayerNorm-Linear-SiLU-Linear, each conditioned on the noise level
    dropout: float = 0.0                    # dropout probability inside each residual block
