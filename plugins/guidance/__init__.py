"""Built-in guidance methods: classifier-free guidance, autoguidance and adaptive projected guidance.

Each may be limited to an interval of noise levels (``sigma_low``, ``sigma_high``;
Kynkäänniemi et al. 2024). Registered lazily by ``"module:attr"``: importing
this plugin does not import torch.
"""

from sandbox_plugins.guidance.params import APGParams, AutoguidanceParams, CFGParams

from sandbox import hookimpl


@hookimpl
def register_guidance(register):
    register(
        "cfg",
        "sandbox_plugins.guidance.methods:ClassifierFree",
        params=CFGParams,
        description="Classifier-free guidance D_u + w (D_c - D_u) (Ho & Salimans 2022), optionally on an interval",
    )
    register(
        "autoguidance",
        "sandbox_plugins.guidance.methods:Autoguidance",
        params=AutoguidanceParams,
        description="Autoguidance D_0 + w (D_1 - D_0), guided by a weaker run or checkpoint (Karras et al. 2024)",
    )
    register(
        "apg",
        "sandbox_plugins.guidance.methods:AdaptiveProjected",
        params=APGParams,
        description="Adaptive projected guidance: CFG's update without its part along D_c (Sadat et al. 2024)",
    )
