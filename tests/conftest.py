import os
import sys

import torch

# Put this folder on sys.path so that test modules can import their shared helpers: `from helpers import ...`.
sys.path.insert(0, os.path.dirname(__file__))

# The suite's tensors are small: intra-op threads cost more than they give, and on a busy 2-core machine they
# thrash (measured 5-20x slower). SCORESDE_TEST_THREADS overrides.
torch.set_num_threads(int(os.environ.get("SCORESDE_TEST_THREADS", "1")))


def pytest_report_header(config):
    """Which CPU kernels this run uses: their rounding differs between machines (`make test-kernels`)."""
    settings = " ".join(f"{k}={os.environ[k]}" for k in ("ATEN_CPU_CAPABILITY", "MKL_CBWR", "MKL_ENABLE_INSTRUCTIONS")
                        if k in os.environ)
    return f"torch {torch.__version__}, CPU capability {torch.backends.cpu.get_cpu_capability()}" + (
        f" ({settings})" if settings else "")
