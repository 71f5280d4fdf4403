"""The README's Python snippets run as pasted, in order (the training one at a smaller step count)."""
import math
import pathlib
import re

import pytest

ROOT = pathlib.Path(__file__).resolve().parents[1]


@pytest.mark.slow
def test_readme_python_snippets_run_in_order(tmp_path, monkeypatch):
    text = (ROOT / "README.md").read_text(encoding="utf-8")
    blocks = re.findall(r"```python\n(.*?)```", text, flags=re.S)
    assert len(blocks) >= 5
    code = "\n".join(blocks)
    assert "steps=5000" in code
    code = code.replace("steps=5000", "steps=30")          # the only change: a shorter training run
    monkeypatch.chdir(tmp_path)                             # the training snippet writes runs/8g
    namespace = {}
    exec(compile(code, "README.md", "exec"), namespace)
    assert namespace["trainer"].global_step == 31 and namespace["ncsn"].nfe() == 501
    assert namespace["cond_trainer"].global_step == 30 and namespace["res"].network_evaluations == 40
    assert math.isfinite(namespace["ev"].bpd) and math.isfinite(namespace["bpd"].mean)
