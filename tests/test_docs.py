"""The documentation site builds in strict mode: a broken reference, a missing page or a bad docstring fails."""
import os
import pathlib
import subprocess
import sys

import pytest

pytest.importorskip("mkdocs")
pytest.importorskip("mkdocstrings")

ROOT = pathlib.Path(__file__).resolve().parents[1]


@pytest.mark.slow
def test_site_builds_strict(tmp_path):
    env = dict(os.environ, NO_MKDOCS_2_WARNING="1")
    out = subprocess.run([sys.executable, "-m", "mkdocs", "build", "--strict", "--site-dir", str(tmp_path / "site")],
                         cwd=ROOT, capture_output=True, text=True, env=env, timeout=300)
    assert out.returncode == 0, out.stdout + out.stderr
    assert "WARNING" not in out.stderr, out.stderr
    api = (tmp_path / "site" / "api" / "index.html").read_text(encoding="utf-8")
    # The reference is generated from the docstrings, not just headings.
    for text in ("Variance-preserving SDE", "DPM-Solver", "probability-flow ODE", "Tile images"):
        assert text in api, f"{text!r} missing from the API reference"
    # Nothing the built pages load comes from a CDN: the site reads offline.
    for page in (tmp_path / "site").rglob("*.html"):
        html = page.read_text(encoding="utf-8")
        assert 'src="http' not in html and "fonts.googleapis" not in html, page


def test_benchmark_commands_name_existing_scripts():
    import re

    text = (ROOT / "docs" / "benchmarks.md").read_text(encoding="utf-8")
    scripts = set(re.findall(r"benchmarks/([a-z0-9_]+\.py)", text))
    assert scripts, "docs/benchmarks.md names no benchmark script"
    missing = sorted(s for s in scripts if not (ROOT / "benchmarks" / s).is_file())
    assert not missing, f"docs/benchmarks.md names scripts that do not exist: {missing}"
