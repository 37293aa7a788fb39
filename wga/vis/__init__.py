"""Feature visualisation: images that make one unit of a Keras model fire.

The engine is split by concern, like Lucid's ``optvis`` package:

* :mod:`wga.vis.param` — how an image is parameterised (pixels, or a 1/f-scaled Fourier spectrum
  with colour decorrelation) and mapped to RGB in [0, 1];
* :mod:`wga.vis.transform` — the random transformations (pad, jitter, scale, rotate) applied
  inside the compiled step, each batch element from its own seed;
* :mod:`wga.vis.objective_table` — the objectives by name and what each needs (layer kind, unit,
  position, vector), free of TensorFlow so front ends validate with it;
* :mod:`wga.vis.objective` — their scoring functions (channel, neuron, class logit, layer,
  diversity), registered under the table's names, and the ReLU-gradient warm-up;
* :mod:`wga.vis.presets` — named recipes (``lucid``, ``offert2018``, ``preview``, ``pixel``), each
  naming its parts: parameterisation, optimiser, octave schedule, transforms, hooks;
* :mod:`wga.vis.optim` — the optimisers (Adam, the 2018 normalised gradient), one protocol;
* :mod:`wga.vis.hooks` — what the step loop does around the step (the 2018 median filter, detail
  re-injection, autotone), as small named types;
* :mod:`wga.vis.render` — :class:`~wga.vis.render.Recipe`, the compiled step and its cache,
  :class:`~wga.vis.render.BatchRender` (step-wise, pausable) and :func:`~wga.vis.render.render`;
* :mod:`wga.vis.png` — PNG files that carry their recipe in text metadata.

Import the submodules directly; importing this package does not start TensorFlow.
"""
