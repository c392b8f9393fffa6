"""The seed's other experiments: learning 2-D dynamical systems from trajectories, and a latent-ODE VAE
(on spirals, and on heartbeat phase portraits).

Built on the classifier study's infrastructure: learned fields run inside :class:`odenet.ODEBlock`
(so ``nfe_forward`` / ``nfe_backward`` are the project's exact counts), configs are dataclasses
parsed by :mod:`odenet.config`, runs write ``metrics.jsonl`` and TensorBoard through
:class:`odenet.run.log.RunLogger`, and reports go through :mod:`odenet.reports`.

Modules: ``systems`` (true systems registry), ``fields`` (learned fields registry and the model),
``data`` (irregular observation times, sub-trajectory batches), ``fit`` (fitting and fit-all),
``spirals`` (the latent experiment's data), ``latent`` (latent-ODE VAE), ``runs`` (run-directory and
solver-failure helpers), ``plots`` and ``report`` (no torch), ``commands`` (the commands).
Heartbeats: ``heartbeats`` (recordings, beats cut at peaks, the split; no torch), ``beats_config``,
``beats_model`` (the models compared and their objective), ``beats_score`` (measurements), ``beats_run``
(runs over windows × models × seeds), ``beats_plots`` and ``beats_report`` (no torch).
"""
