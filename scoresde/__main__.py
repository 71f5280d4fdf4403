"""``python -m scoresde`` runs the command line (see [`scoresde.cli`][scoresde.cli])."""
from .cli import main

raise SystemExit(main())
