"""``python -m wga``: the command-line front end."""

from wga.cli import main

raise SystemExit(main())
