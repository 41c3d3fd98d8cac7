"""Typed parameters of the built-in denoisers (torch-free, so the CLI can list them cheaply).

The recipe loader checks a ``denoiser:`` section against these with
``OmegaConf.structured``, and each dataclass checks its own ranges in
``__post_init__`` (:mod:`sandbox.params`). What depends on the data's item
shape (images of shape (C, H, W), how often H and W can be halved, which
levels attend) is checked when the network is built. The defaults of
:class:`UNetParams` are the CIFAR-10 configuration of Ho et al. (2020),
"Denoising Diffusion Probabilistic Models", appendix B (35.7M parameters on
3x32x32 images).
"""

from dataclasses import dataclass, field

from sandbox.errors import ParameterError
from sandbox.params import at_least, between, divides


def _positive_ints(values: object) -> bool:
    return isinstance(values, list) and all(isinstance(v, int) and not isinstance(v, bool) and v >= 1 for v in values)


@dataclass
class UNetParams:
    """DDPM UNet of Ho et al. (2020); defaults are their CIFAR-10 model."""

    # fmt: off
    channels: int = 128                     # base width: channels of conv_in and of level 0 (x channel_mult[0])
    channel_mult: list[int] = field(default_factory=lambda: [1, 2, 2, 2])  # width per level; each level halves H, W
    num_res_blocks: int = 2                 # residual blocks per level down (one more per level up)
    attention_resolutions: list[int] = field(default_factory=lambda: [16])  # feature-map heights with self-attention
    dropout: float = 0.1                    # dropout probability inside each residual block
    num_heads: int = 1                      # attention heads; must divide the channels at every attention level
    groups: int = 32                        # GroupNorm groups; must divide channels x every channel_mult entry
    # fmt: on

    def __post_init__(self) -> None:
        for key in ("channels", "num_res_blocks", "num_heads", "groups"):
            at_least(self, key, 1)
        between(self, "dropout", 0.0, 1.0, high_open=True)
        if not self.channel_mult or not _positive_ints(self.channel_mult):
            raise ParameterError("channel_mult", self.channel_mult, "a non-empty list of integers >= 1")
        if not _positive_ints(self.attention_resolutions):
            raise ParameterError(
                "attention_resolutions", self.attention_resolutions, "a list of feature-map heights >= 1 (pixels)"
            )
        # every GroupNorm's width is channels x a channel_mult entry, or a sum of two (the up path's skip
        # concatenations), and the first block's is channels itself: dividing channels is exactly what is needed
        divides(
            self, "groups", self.channels, f"channels ({self.channels}), and so of channels x every channel_mult entry"
        )
        middle = self.channels * self.channel_mult[-1]  # the middle block always attends
        divides(
            self, "num_heads", middle, f"the {middle} channels of the middle attention (channels x channel_mult[-1])"
        )


@dataclass
class ResNetParams:
    """Residual stack at full resolution: no down-sampling."""

    # fmt: off
    channels: int = 64                      # width of every residual block
    num_blocks: int = 6                     # residual blocks, each conditioned on the noise level
    dropout: float = 0.0                    # dropout probability inside each residual block
    attention: bool = False                 # one self-attention over all pixels, mid-stack
    num_heads: int = 1                      # attention heads when attention is on; must divide channels
    groups: int = 32                        # GroupNorm groups; must divide channels
    # fmt: on

    def __post_init__(self) -> None:
        for key in ("channels", "num_blocks", "num_heads", "groups"):
            at_least(self, key, 1)
        between(self, "dropout", 0.0, 1.0, high_open=True)
        divides(self, "groups", self.channels, f"channels ({self.channels})")
        if self.attention:
            divides(self, "num_heads", self.channels, f"channels ({self.channels}), the width of the attention block")


@dataclass
class MLPParams:
    """Residual MLP on the flattened data item (for 2-D toy data and any small shape)."""

    # fmt: off
    hidden: int = 128                       # width of the hidden layers and of the noise-level embedding
    layers: int = 3                         # residual LayerNorm-Linear-SiLU-Linear blocks, noise-conditioned
    dropout: float = 0.0                    # dropout probability inside each residual block
    # fmt: on

    def __post_init__(self) -> None:
        for key in ("hidden", "layers"):
            at_least(self, key, 1)
        between(self, "dropout", 0.0, 1.0, high_open=True)
