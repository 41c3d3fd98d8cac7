"""``sandbox summary``: a sweep's cells grouped across seeds, ranked, and compared with a baseline.

Cells with the same axis values (all seeds) form a group. For each group and
metric the table gives the mean, the sample standard deviation across seeds
and the number of finished cells. Metrics are dotted keys of the cells'
``summary.json``; by default every numeric ``sample_quality.generated.*``
(the dataset's own score of the samples), then each ``likelihood.<estimator>.nll``
(``eval.metrics: [nll]``, comparable across schedules and targets too), then
``train.final_val_loss_ema`` and ``train.images_per_s``. Sample quality comes first, and so ranks,
because it is comparable across any axis; the validation loss is not
comparable across schedules, targets or weightings (each draws other noise
levels, or weighs them otherwise), only within one. Among the sample-quality
figures, FID then KID (``eval.metrics``, :mod:`sandbox.engine.fid`) come first where
the cells have them: the standard figures for images.
A metric whose name contains ``loss``, ``distance``, ``error``, ``swd``,
``w2``, ``fid``, ``kid`` or ``nll`` is better lower, any other better higher; ``key:min`` or
``key:max`` says so explicitly. Groups are ranked by the first metric, and
each is compared with the baseline group (the first in plan order, or the one
``--baseline key=value,...`` picks). Writes ``summary.csv``, ``summary.md``
and ``summary.png`` into the sweep folder (``sandbox summary SWEEP`` with
``--metric`` or ``--baseline``: into ``SWEEP/summaries/<metrics>[@<baseline>]/``
unless ``--out`` says where, so the sweep's own files stay as the sweep wrote them). When the groups differ in a
``guidance`` key (``guidance.scale: [1, 2, 3]``), ``summary.md`` also gets a
"guidance trade-off" table and ``tradeoff.png`` plots quality
(``class_accuracy``, else the ranking metric) against diversity
(``class_spread``, else ``class_coverage``), one point per setting.

One module per job: :mod:`~sandbox.tools.summary.cells` (a run folder's
outcome), :mod:`~sandbox.tools.summary.stats` (metrics, groups, statistics,
ranking), :mod:`~sandbox.tools.summary.render` (table, Markdown, CSV, plots),
:mod:`~sandbox.tools.summary.tradeoff` (a guidance sweep's quality against diversity),
:mod:`~sandbox.tools.summary.sweep` (one sweep folder) and
:mod:`~sandbox.tools.summary.runs` (any set of runs and sweeps). A live
sweep's cell states come from the engine (:mod:`sandbox.engine.sweepdir`),
never from the sweep tool.
"""

from sandbox.tools.summary.cells import CellResult, read_cell
from sandbox.tools.summary.render import SweepSummary, rich_table, rows, write_csv, write_markdown, write_plot
from sandbox.tools.summary.runs import NOT_COMPARED, collect_runs, summarize_runs
from sandbox.tools.summary.stats import (
    DEFAULT_METRICS,
    Group,
    Metric,
    aggregate,
    lower_is_better,
    mean_std,
    parse_baseline,
    parse_metric,
)
from sandbox.tools.summary.sweep import SUMMARIES, load_cells, summarize, summary_folder

__all__ = [
    "DEFAULT_METRICS",
    "NOT_COMPARED",
    "SUMMARIES",
    "CellResult",
    "Group",
    "Metric",
    "SweepSummary",
    "aggregate",
    "collect_runs",
    "load_cells",
    "lower_is_better",
    "mean_std",
    "parse_baseline",
    "parse_metric",
    "read_cell",
    "rich_table",
    "rows",
    "summarize",
    "summarize_runs",
    "summary_folder",
    "write_csv",
    "write_markdown",
    "write_plot",
]
