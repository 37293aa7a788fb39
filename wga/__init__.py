"""wga: the Web Gallery of Art, fine-tuned CNNs, and what their units see.

The package holds all the logic; the notebooks, the CLI (``python -m wga``) and the REST API
(served through jupyter_kernel_gateway) are thin fronts that call the same functions.
"""

import logging

__version__ = "0.1.0"

# Library code logs; only front ends (the CLI, notebooks) decide where the records go.
logging.getLogger(__name__).addHandler(logging.NullHandler())
