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
    # Nothing the built pages load comes from a CDN: the site reads offline; no raw Sphinx role is shown as text.
    import re

    for page in (tmp_path / "site").rglob("*.html"):
        html = page.read_text(encoding="utf-8")
        assert 'src="http' not in html and "fonts.googleapis" not in html, page
        assert not re.search(r":(class|func|meth|data|mod|attr):", html), page
    assert 'href="#scoresde.ScoreModel"' in api            # cross-references render as links


def test_docstrings_use_the_style_mkdocstrings_renders():
    """No Sphinx roles (mkdocstrings shows them as raw text) and no grouped parameters ("rtol, atol: ...", which
    render as one required parameter named "rtol, atol")."""
    import re

    roles = re.compile(r":(class|func|meth|data|mod|attr):`")
    grouped = re.compile(r"^\s{8,12}[a-z_]+(, [a-z_]+)+: ", re.M)
    bad = [(str(p.relative_to(ROOT)), m.group(0).strip()) for p in (ROOT / "scoresde").rglob("*.py")
           for m in list(roles.finditer(p.read_text(encoding="utf-8"))) + list(grouped.finditer(p.read_text(encoding="utf-8")))]
    assert not bad, bad[:10]


def test_benchmark_commands_name_existing_scripts():
    import re

    text = (ROOT / "docs" / "benchmarks.md").read_text(encoding="utf-8")
    scripts = set(re.findall(r"benchmarks/([a-z0-9_]+\.py)", text))
    assert scripts, "docs/benchmarks.md names no benchmark script"
    missing = sorted(s for s in scripts if not (ROOT / "benchmarks" / s).is_file())
    assert not missing, f"docs/benchmarks.md names scripts that do not exist: {missing}"


def _code_blocks(text: str, language: str):
    import re

    return re.findall(rf"```{language}\n(.*?)```", text, flags=re.S)


def test_extending_example_trains_and_samples_from_the_command_line(tmp_path, monkeypatch):
    """docs/extending.md: a user's SDE and sampler, named by import path, trained and sampled by the CLI."""
    import numpy as np
    import torch
    import yaml

    import scoresde as sd
    from scoresde.app.cli import main

    text = (ROOT / "docs" / "extending.md").read_text(encoding="utf-8")
    module = next(b for b in _code_blocks(text, "python") if b.startswith("# my_components.py"))
    (tmp_path / "my_components.py").write_text(module)
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.chdir(tmp_path)
    for registry in (sd.SDES, sd.SAMPLERS):             # the module registers names: undo that afterwards
        monkeypatch.setattr(registry, "_entries", dict(registry._entries))
    monkeypatch.delitem(sys.modules, "my_components", raising=False)
    commands = [line.split()[1:] for b in _code_blocks(text, "bash") for line in b.splitlines()
                if line.startswith("scoresde ")]
    assert [c[0] for c in commands] == ["train", "sample", "compare"]
    small = {"train": ["--steps=30", "--data.n=256", "--progress=false", "--device=cpu"],
             "sample": ["--n", "200", "--device", "cpu"], "compare": ["--n", "200", "--device", "cpu"]}
    for argv in commands:
        assert main(argv + small[argv[0]]) == 0, argv
    cfg = yaml.safe_load(open(tmp_path / "runs" / "ou" / "config.yaml"))
    assert cfg["sde"] == {"name": "my_components:OrnsteinUhlenbeck", "beta": 6, "T": 1.0}
    x = np.load(tmp_path / "samples" / "samples.npz")
    assert x["x"].shape == (200, 2) and int(x["nfe"]) == 100
    # The registered names work from Python too, and the user SDE has the closed-form marginals it states.
    import my_components  # noqa: F401

    sde = sd.SDES.build("ou", beta=6.0)
    t = torch.tensor([0.3, 0.9], dtype=torch.float64)
    torch.testing.assert_close(sde.std(t) ** 2, 1 - torch.exp(-6.0 * t), rtol=1e-7, atol=0)
    assert sd.SAMPLERS.build("euler_ode", steps=100).nfe() == 100


def test_the_registry_table_of_the_extending_guide_lists_every_registered_name():
    """docs/extending.md's table is checked against the registries, so it cannot drift from them (it listed 8 of
    13 samplers, 3 of 7 SDEs and 3 of 8 weightings)."""
    import re

    import scoresde as sd

    text = (ROOT / "docs" / "extending.md").read_text()
    rows = re.findall(r"^\| `sd\.([\w.]+)` \| [^|]+ \| (.+) \|$", text, flags=re.M)
    assert len(rows) >= 9
    for path, names in rows:
        registry = sd
        for part in path.split("."):
            registry = getattr(registry, part)
        assert re.findall(r"`(\w+)`", names) == registry.names(), path
    listed = {path.split(".")[-1] for path, _ in rows}
    assert {"SDES", "NETS", "PARAMETERIZATIONS", "SAMPLERS", "DATASETS", "WEIGHTINGS", "TIME_DISTRIBUTIONS",
            "INVERSE_METHODS", "ODE_SOLVERS", "PREDICTORS", "CORRECTORS", "LOSSES"} <= listed
