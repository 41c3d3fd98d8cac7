"""``sandbox sweep``: the cartesian product of a recipe's ``matrix:`` axes, run cell by cell, resumable.

A recipe declares its axes in a top-level ``matrix:`` mapping from a recipe
key to a list of values; the command line adds or replaces axes with
``--axis key=v1,v2``. An axis may vary any key, a component parameter
(``denoiser.channels: [32, 64]``), or a whole section, given as mappings::

    matrix:
      denoiser:                       # whole-section choices, labelled by their name
        - {name: unet}
        - {name: resnet, channels: 32, num_blocks: 4, groups: 8}
      schedule.name: [linear, cosine]

A value is applied as a recipe layer, so a section whose ``name`` changes
starts afresh (``{name: resnet, ...}`` gets the ResNet's defaults), and one
with the same name is merged into the recipe's section.

A cell is the recipe plus the command line's overrides, one value per axis
and ``run.seed = <recipe seed> + i`` for ``i < seeds``. Every cell is
validated before anything runs. Its identity is a hash of its fully resolved
recipe (without the keys that do not change results, :data:`NOT_IDENTITY`),
and its folder is ``<sweep>/cells/<id>/``. A cell is done when that folder
holds a readable ``summary.json``, so running the same sweep again only runs
what is missing, and a changed recipe gets new cells instead of stale results.
An unfinished cell resumes in its folder from its latest good checkpoint
(:func:`sandbox.engine.resume.resume_recipe`); one without a checkpoint is moved
aside and run again.

One sweep process works on a sweep folder at a time (:class:`SweepLock`).
SIGINT or SIGTERM stops a sweep: no new cell starts, each running cell gets
the signal (it finishes its step, writes a checkpoint and stops), and
running the same command again resumes them; a second SIGINT kills the
cells at once.

One module per job: :mod:`~sandbox.tools.sweep.axes` (the matrix and
``--axis``), :mod:`~sandbox.tools.sweep.plan` (the cells, their identity and
state), :mod:`~sandbox.tools.sweep.lock` (one sweep per folder),
:mod:`~sandbox.tools.sweep.signals`, :mod:`~sandbox.tools.sweep.cell` (one
cell, and a launcher's job), :mod:`~sandbox.tools.sweep.local` (the local
runner), :mod:`~sandbox.tools.sweep.launch` (the cells as a launcher's jobs)
and :mod:`~sandbox.tools.sweep.status` (``--status``). What ``sandbox
summary`` reads too (the cells' states, ``jobs.json``) is in the engine,
:mod:`sandbox.engine.sweepdir`.
"""

from sandbox.engine.sweepdir import CellStatus, job_states, live_jobs, read_jobs, sweep_status
from sandbox.tools.sweep.axes import Axis, matrix_axes, merge_axes, override, parse_axis, value_labels
from sandbox.tools.sweep.cell import (
    cell_task,
    move_aside,
    open_cell,
    run_cell,
    run_interruptible,
    run_job,
    sample_cell,
)
from sandbox.tools.sweep.launch import LOCAL, launch_sweep, make_launcher
from sandbox.tools.sweep.local import failed, gpu_for, run_sweep
from sandbox.tools.sweep.lock import SweepLock
from sandbox.tools.sweep.plan import (
    NOT_IDENTITY,
    SAMPLING_ONLY,
    Cell,
    Plan,
    cell_id,
    cell_state,
    plan_record,
    plan_sweep,
    plan_table,
    refresh,
    training_id,
)
from sandbox.tools.sweep.signals import SweepStop
from sandbox.tools.sweep.status import status_table

__all__ = [
    "LOCAL",
    "NOT_IDENTITY",
    "SAMPLING_ONLY",
    "Axis",
    "Cell",
    "CellStatus",
    "Plan",
    "SweepLock",
    "SweepStop",
    "cell_id",
    "cell_state",
    "cell_task",
    "failed",
    "gpu_for",
    "job_states",
    "launch_sweep",
    "live_jobs",
    "make_launcher",
    "matrix_axes",
    "merge_axes",
    "move_aside",
    "open_cell",
    "override",
    "parse_axis",
    "plan_record",
    "plan_sweep",
    "plan_table",
    "read_jobs",
    "refresh",
    "run_cell",
    "run_interruptible",
    "run_job",
    "run_sweep",
    "sample_cell",
    "status_table",
    "sweep_status",
    "training_id",
    "value_labels",
]
