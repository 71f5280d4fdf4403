import os
import sys

# Let test modules share small helpers (e.g. `from test_sde import Wiggly`).
sys.path.insert(0, os.path.dirname(__file__))
