"""``python -m wga --backend NAME``: the Keras backend a command runs on, chosen before Keras loads.

Keras reads ``KERAS_BACKEND`` once, when it is first imported, so the flag only sets that variable
(Keras's own convention; ``~/.keras/keras.json`` still counts when neither is given) and checks,
before any model is touched, that the chosen backend is installed — naming the extra that brings
it, rather than letting ``import keras`` fail deep inside a command.
"""

from __future__ import annotations

import importlib.util
import os
import sys

from wga.errors import InvalidInput

# Commands that never import Keras: they run whatever backend is (or is not) installed.
KERAS_FREE_COMMANDS = frozenset({"download", "dataset"})


def installed(module: str) -> bool:
    """Whether ``module`` can be imported here (found without importing it)."""
    try:
        return importlib.util.find_spec(module) is not None
    except (ImportError, ValueError):  # a broken install, or an import hook that refuses it
        return False


def choose_backend(name: str | None) -> str:
    """Set the backend to ``name`` (or keep the configured one) and check it is installed."""
    from wga.vis.backends import BACKENDS, backend_name

    if name is not None:
        if "keras" in sys.modules and backend_name() != name:
            raise InvalidInput(
                f"Keras is already loaded on {backend_name()!r} in this process: choose the "
                "backend before Keras is imported (KERAS_BACKEND, or --backend on the command line)"
            )
        os.environ["KERAS_BACKEND"] = name
    chosen = backend_name()
    if chosen not in BACKENDS:
        raise InvalidInput(
            f"the Keras backend {chosen!r} (KERAS_BACKEND or ~/.keras/keras.json) is not one wga "
            f"runs on: use one of {', '.join(BACKENDS)}"
        )
    if not installed(chosen):
        others = [other for other in BACKENDS if other != chosen and installed(other)]
        hint = f", or use one that is: --backend {others[0]}" if others else ""
        raise InvalidInput(
            f"the Keras backend {chosen!r} is not installed: pip install 'wga[{chosen}]'{hint}"
        )
    return chosen
