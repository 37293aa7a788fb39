"""Fine-tuning with an honest evaluation: pipeline → finetune → evaluate.

:mod:`wga.train.pipeline` feeds a dataset folder through ``tf.data``, :mod:`wga.train.finetune`
trains a registry model in two phases into a run folder, :mod:`wga.train.evaluate` measures it on
the validation and test splits.
"""
