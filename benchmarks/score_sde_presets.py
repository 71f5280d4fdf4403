"""Write score_sde_pytorch's published configs as plain JSON: scoresde/zoo/score_sde_pytorch_configs.json.

    /work/peers/venv/bin/python benchmarks/score_sde_presets.py --score-sde-pytorch /path/to/score_sde_pytorch

score_sde_pytorch (Song et al. 2021) keeps one Python file per experiment under ``configs/`` (``ve/``, ``vp/``,
``subvp/`` and the sub-folders ``ve/ncsn``, ``ve/ncsnv2``, ``vp/ddpm``), each with a ``get_config()`` returning an
``ml_collections.ConfigDict`` built on a ``configs/default_*_configs.py`` base. This script imports every such file
from the checkout (the bases are not presets), calls ``get_config()`` and stores the result as JSON, so scoresde
offers them by name (`scoresde.zoo.presets`) without ever executing their files. Needs ml_collections and torch (the
bases import torch for ``config.device``).

Conversion: every section and field is kept (training, sampling, eval, data, model, optim, seed); tuples become
lists; ``device`` (``cuda:0`` or ``cpu``, whichever the writing machine has) is dropped, being a property of the
machine rather than of the experiment. Any other value that is not a JSON scalar, list or dict stops the script.
The file holds one entry per config, named by its path under ``configs/`` without ``.py`` (e.g.
``"vp/cifar10_ddpmpp_deep_continuous"``), written with sorted keys so that a rerun gives the same bytes.
"""
from __future__ import annotations

import argparse
import importlib
import json
import os
import sys
from pathlib import Path

OUTPUT = Path(__file__).resolve().parents[1] / "scoresde" / "zoo" / "score_sde_pytorch_configs.json"
DROPPED = ("device",)


def config_names(root: Path) -> list:
    """Names of the preset files under ``root/configs`` (path without .py, "/"-separated), sorted; the
    ``default_*`` bases and ``__init__`` files are left out."""
    configs = root / "configs"
    if not configs.is_dir():
        raise SystemExit(f"no configs/ folder in {str(root)!r}: pass the score_sde_pytorch checkout")
    names = []
    for path in configs.rglob("*.py"):
        if path.name.startswith("default_") or path.name == "__init__.py":
            continue
        names.append(path.relative_to(configs).with_suffix("").as_posix())
    return sorted(names)


def plain(value, where: str):
    """A JSON-ready copy of ``value``: dicts and tuples/lists recursively, scalars as they are."""
    if isinstance(value, dict):
        return {str(k): plain(v, f"{where}.{k}") for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [plain(v, f"{where}[{i}]") for i, v in enumerate(value)]
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    raise SystemExit(f"{where}: a {type(value).__module__}.{type(value).__name__} has no JSON form; "
                     "extend plain() or DROPPED")


def load_config(name: str) -> dict:
    """``get_config()`` of configs/<name>.py as a plain nested dict (the checkout must be on sys.path)."""
    module = importlib.import_module("configs." + name.replace("/", "."))
    config = module.get_config().to_dict()
    for key in DROPPED:
        config.pop(key, None)
    return plain(config, name)


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--score-sde-pytorch", required=True, type=Path,
                        help="the score_sde_pytorch checkout (the folder holding configs/)")
    parser.add_argument("--output", type=Path, default=OUTPUT, help=f"where to write (default {OUTPUT})")
    args = parser.parse_args(argv)
    root = args.score_sde_pytorch.resolve()
    names = config_names(root)
    sys.path.insert(0, str(root))
    sys.modules.pop("configs", None)
    presets = {name: load_config(name) for name in names}
    text = json.dumps(presets, sort_keys=True, indent=1) + "\n"
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(text)
    sections = sorted({k for config in presets.values() for k in config})
    print(f"{len(presets)} configs ({', '.join(sections)}) -> {os.path.relpath(args.output)}")


if __name__ == "__main__":
    main()
