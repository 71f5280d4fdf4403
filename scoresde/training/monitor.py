"""What the Trainer shows while it trains, with the EMA weights and its own seeds (training's random streams are
untouched): samples and their figure, and held-out metrics (NLL and bits/dim, or a classifier's accuracy)."""
from __future__ import annotations

import os
from typing import Dict, Optional

import torch

from ..evaluation.plot import save_samples
from ..guidance import conditional_score
from ..guidance.condition import call_model, cond_to, index_rows, model_null, null_condition
from ..likelihood import evaluate_likelihood
from ..losses import noised_class_log_probs
from ..score import Score

Tensor = torch.Tensor


def model_score(trainer, cond=None) -> Score:
    """The trainer's model as a score function that accepts any floating dtype (cast to the model's and back);
    for a conditional model the conditional score of ``cond`` (labels (B,) or an int, a tensor (B, ...), a dict;
    default: the null condition, i.e. the unconditional score)."""
    model, dtype = trainer.model, trainer.dtype
    if trainer.conditional:
        def cast(x: Tensor, t: Tensor, cond=None, **named) -> Tensor:
            cond, named = cond_to(cond, dtype=dtype), cond_to(named, dtype=dtype)
            return call_model(model, x.to(dtype), t.to(dtype), {**named, **({} if cond is None else {"cond": cond})}
                              if named else cond).to(x.dtype)

        cast.num_classes, cast.network, cast.null_cond = trainer.num_classes, True, model_null(model)
        if cond is None:
            cond = cast.null_cond if trainer.num_classes is not None else _null_rows(trainer, cast.null_cond)
        return conditional_score(cast, cond)

    def score(x: Tensor, t: Tensor) -> Tensor:
        return model(x.to(dtype), t.to(dtype)).to(x.dtype)

    return Score(score, network=True)


def _null_rows(trainer, null):
    """The null condition with one row (broadcast over the batch by `conditional_score`), shaped like a row of the
    data's conditions."""
    ds = trainer.dataset
    example = index_rows(ds.cond, slice(0, 1)) if ds.cond is not None else None
    if example is None:
        raise ValueError("the unconditional score of this model needs the shape of its condition: give cond")
    return null_condition(null, cond_to(example, trainer.device, trainer.dtype), 1)


def _require_score_model(trainer, what: str) -> None:
    if trainer.uses_labels and not trainer.conditional:
        raise ValueError(f"Trainer.{what} needs a score model; this trainer trains a classifier (a model "
                         f"without cond whose loss takes labels)")


def sample(trainer, n: Optional[int] = None, seed: Optional[int] = None) -> Tensor:
    """``n`` samples (default ``num_samples``: 1000 points, or 64 images) of the trainer's sampler with the EMA
    weights, (n, *D), seeded by ``seed`` (default ``config.seed``); class i mod K for a conditional model."""
    _require_score_model(trainer, "sample")
    if n is None:
        n = trainer.config.num_samples or (1000 if len(trainer.dataset.shape) == 1 else 64)
    n = int(n)
    generator = torch.Generator(device=trainer.device).manual_seed(trainer.config.seed if seed is None else seed)
    was_training = trainer.model.training
    trainer.model.eval()
    try:
        with trainer.ema.average_parameters(), torch.no_grad():
            cond = _sample_conditions(trainer, n)
            res = trainer.sampler.sample(trainer.sde, model_score(trainer, cond), (n,) + trainer.dataset.shape,
                                         generator)
    finally:
        trainer.model.train(was_training)
    return res.x


def _sample_conditions(trainer, n: int):
    """The conditions of the monitoring samples: class i mod K for labels, else the data's conditions cycled
    (row i mod N), else None (unconditional)."""
    if not trainer.conditional:
        return None
    if trainer.num_classes is not None and trainer.dataset.cond is None:
        return torch.arange(n, device=trainer.device) % trainer.num_classes
    ds = trainer.dataset
    if ds.cond is None:
        return None
    return cond_to(index_rows(ds.cond, torch.arange(n) % len(ds)), trainer.device, trainer.dtype)


def save_figure(trainer, path: Optional[str] = None) -> str:
    """`sample` and save the figure (default ``out_dir/samples_<step>.png``; 2-D data drawn under the samples)."""
    if path is None:
        if trainer.config.out_dir is None:
            raise ValueError("no path given and config.out_dir is None")
        path = os.path.join(trainer.config.out_dir, f"samples_{trainer.global_step:07d}.png")
    x = sample(trainer)
    reference = trainer.dataset.x[:2000] if x.dim() == 2 and x.shape[1] <= 2 else None
    return save_samples(x, path, data_range=trainer.dataset.data_range, reference=reference,
                        title=f"step {trainer.global_step} (black: data)" if reference is not None
                        else f"step {trainer.global_step}")


def evaluate(trainer) -> Dict[str, float]:
    """``eval_fn`` if given, else the held-out NLL (and bits/dim) of `scoresde.evaluate_likelihood`, or a
    classifier's accuracy and class NLL; with the EMA weights; {} without eval_data (see `Trainer.evaluate`)."""
    was_training = trainer.model.training
    trainer.model.eval()
    try:
        with trainer.ema.average_parameters():
            if trainer.eval_fn is not None:
                return dict(trainer.eval_fn(trainer.model, trainer.sde))
            if trainer.eval_data is None:
                return {}
            generator = torch.Generator(device=trainer.device).manual_seed(trainer.config.seed + 104729)
            c = trainer.config
            if trainer.uses_labels and not trainer.conditional:
                return _evaluate_classifier(trainer, generator)
            data = trainer.eval_data
            labelled = trainer.conditional and data.labels is not None and data.cond is None
            cond = cond_to(data.cond, trainer.device, trainer.dtype) if trainer.conditional else None
            score = trainer.model if labelled or cond is not None else model_score(trainer)  # x cast to its dtype
            return evaluate_likelihood(trainer.sde, score, data, n=c.num_eval, labels=labelled, cond=cond,
                                       generator=generator, device=trainer.device, dtype=trainer.dtype,
                                       eps=c.eps, rtol=c.eval_rtol, atol=c.eval_atol).metrics()
    finally:
        trainer.model.train(was_training)


def _evaluate_classifier(trainer, generator: torch.Generator) -> Dict[str, float]:
    data = trainer.eval_data
    if data.labels is None:
        raise ValueError(f"evaluating a classifier needs labelled eval_data; {data.name!r} has no labels")
    n = min(len(data), trainer.config.num_eval)
    x = data.x[:n].to(device=trainer.device, dtype=trainer.dtype)
    with torch.no_grad():
        log_probs, cond = noised_class_log_probs(trainer.sde, trainer.model, x, data.labels[:n].to(trainer.device),
                                                 eps=trainer.config.eps, generator=generator)
    return {"class_nll": float(-log_probs.gather(1, cond[:, None]).mean()),
            "accuracy": float((log_probs.argmax(1) == cond).double().mean())}
