"""Reading a sweep: the analysis CLIs, on top of :mod:`tti_ray.fronts`.

Design card
-----------
* **What**: command-line tools that turn a sweep (an experiment directory or an MLflow
  experiment) and its checkpoints into files a researcher reads: the Pareto front, a one-page
  HTML report, a neuron browser, per-layer linear probes.
* **Shares, never copies**: dominance, fronts, hypervolume, seed statistics and Welch tests are
  :mod:`tti_ray.fronts` (the code the sweep itself runs); activations come from
  :func:`tti_ray.model.capture`, per-neuron entropy/frequency from
  :class:`tti_ray.metrics.stats.ActivationStats`, categories from
  :mod:`tti_ray.interventions.categories`, checkpoints from
  :func:`tti_ray.train.checkpoint.load_model`.
* **Partial sweeps are normal**: every command runs on a running or interrupted sweep and says
  what is missing instead of failing.
* **Static output**: HTML pages are self-contained (figures inlined, data as inline JSON, no
  network, no CDN), so they open from disk, from an MLflow artifact view or over ``http.server``.

Commands (``python -m analysis.<name> --help``)
-----------------------------------------------
* ``analysis.pareto SOURCE [--objectives m:min,...] [--out DIR] [--ref r1,r2]`` -> ``pareto.csv``,
  ``pareto.json``, ``pareto.parquet``, ``hypervolume.json``, ``front.png``.
* ``analysis.report SOURCE [--out DIR] [--baseline CONFIG_ID] [--no-checkpoints]`` ->
  ``report.html`` (+ ``report.json``, PNGs); :func:`analysis.report.log_report` logs it to the
  sweep's parent MLflow run.
* ``analysis.neurons CHECKPOINT [--site mlp_hidden] [--layer 0] [--top-k 10] [--neurons N]`` ->
  ``neurons_<site>_L<layer>.html`` + ``.json``.
* ``analysis.probes CHECKPOINT [--categories coarse|lexicon|pos|FILE]`` -> ``probes_<kind>.json``
  + ``.png``.

SOURCE is an experiment directory (``trials.csv``) or ``mlflow:<experiment>@<tracking uri>``
(:mod:`analysis.sources`). Modules: ``sources`` (readers), ``pareto``, ``report``, ``plots``
(report figures), ``neurons``, ``probes``, ``cli`` (one-line user errors), ``templates/``.
"""
