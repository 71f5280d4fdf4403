"""``python -m scoresde`` runs the command line (see :mod:`scoresde.cli`)."""
from .cli import main

raise SystemExit(main())
