"""Likelihood in bits per dimension: three estimators of ``-log p(x)`` for any schedule, target and denoiser.

- :mod:`.vlb`: DDPM's discrete-time variational bound (Ho et al. 2020, eq. 5) on a discrete schedule, with the
  fixed reverse variances beta_t or the posterior's beta~_t and the discretised Gaussian decoder (eq. 13);
- :mod:`.elbo`: the continuous-time ELBO (Kingma et al. 2021, eq. 17), a Monte Carlo integral over log-SNR;
- :mod:`.ode`: the probability-flow ODE's exact likelihood (Song et al. 2021, eq. 39), with an exact or a
  Hutchinson-Skilling divergence and an adaptive Runge-Kutta solver.

Each reaches the model through the one denoise function ``D(x_t, t) -> x_0`` (:mod:`sandbox.engine.precond`),
so the ``oracle`` denoiser gives the estimators' own error. :mod:`.estimate` holds what they return and the
units, :mod:`.quantise` the 8-bit (or any evenly spaced) data they are bounds for, and :mod:`.evaluate` the
run-level metric (``eval.metrics: [nll]`` and ``sandbox likelihood``).
"""
