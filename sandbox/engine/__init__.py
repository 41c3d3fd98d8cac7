"""The engine: everything that carries out one run.

Training (:mod:`~sandbox.engine.training`, :mod:`~sandbox.engine.batches`,
:mod:`~sandbox.engine.loss`, :mod:`~sandbox.engine.precond`,
:mod:`~sandbox.engine.ema`, :mod:`~sandbox.engine.validation`,
:mod:`~sandbox.engine.acceleration`), its files (:mod:`~sandbox.engine.rundir`,
:mod:`~sandbox.engine.checkpoint`, :mod:`~sandbox.engine.resume`), its
reporting (:mod:`~sandbox.engine.events`, :mod:`~sandbox.engine.health`,
:mod:`~sandbox.engine.images`, :mod:`~sandbox.engine.fid`), its processes
(:mod:`~sandbox.engine.device`, :mod:`~sandbox.engine.distributed`), and the
two jobs a command asks of it: :func:`sandbox.engine.run.run_recipe` and
:func:`sandbox.engine.sample.sample_run`. Two modules hold what several tools
read of runs: :mod:`~sandbox.engine.solve` (a run's samplers against a
many-step reference, for tune-steps and doctor) and
:mod:`~sandbox.engine.sweepdir` (a sweep folder's cells and jobs, for sweep
and summary). The engine imports the core (``sandbox.*``) and itself, never a
tool or the command line.
"""
