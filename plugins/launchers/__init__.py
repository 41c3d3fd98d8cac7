"""Built-in sweep launcher: ``submitit``, a SLURM job array (or local processes) through submitit.

``sandbox sweep --launcher local``, the default, is the sweep's own
process-per-cell runner, not a plugin. A launcher implements
:class:`sandbox.protocols.Launcher`. Registered lazily: importing this plugin
imports neither torch nor submitit.
"""

from sandbox_plugins.launchers.params import SubmititParams

from sandbox import hookimpl


@hookimpl
def register_launchers(register):
    register(
        "submitit",
        "sandbox_plugins.launchers.submitit_launcher:build",
        params=SubmititParams,
        description="a SLURM job array through submitit (executor: local runs the jobs as processes here)",
    )
