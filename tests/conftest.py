import os
import sys

import torch

# Put this folder on sys.path so that test modules can import their shared helpers: `from helpers import ...`.
sys.path.insert(0, os.path.dirname(__file__))

# The suite's tensors are small: intra-op threads cost more than they give, and on a busy 2-core machine they
# thrash (measured 5-20x slower). SCORESDE_TEST_THREADS overrides.
torch.set_num_threads(int(os.environ.get("SCORESDE_TEST_THREADS", "1")))
