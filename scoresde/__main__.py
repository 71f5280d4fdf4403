"""``python -m scoresde`` runs the command line (see [`scoresde.app.cli`][scoresde.app.cli])."""
from .app.cli import main

raise SystemExit(main())
