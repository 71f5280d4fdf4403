"""What a conditional model is conditioned on: ``cond``, and the null condition ∅ of classifier-free guidance.

A condition is one of

- class labels: an int (every sample) or a (B,) long tensor, for a model with ``num_classes`` = K (index K is ∅);
- any tensor with a batch dimension, (B, ...) (an embedding, a measurement y, a low-resolution image); a leading
  size of 1 is repeated over the batch;
- a dict of those (nested dicts allowed, as diffusers' ``added_cond_kwargs``), spread as keyword arguments.

A tensor is the model's third argument, ``model(x, t, cond)``; a dict is spread, ``model(x, t, **cond)``
(`call_model`). The null condition (`null_condition`) has cond's structure: an index for labels, a tensor that
broadcasts to cond's shape (a zero or learned null embedding; a learned one keeps its gradient), or a dict of
them. A model says its own null as ``model.null_cond`` (or ``num_classes`` for labels, see `model_null`).
"""
from __future__ import annotations

from typing import Any, List, Mapping, Optional, Union

import torch

from .._registry import accepts_any_keyword, signature_parameters
from .labels import check_labels, model_classes

Tensor = torch.Tensor
Cond = Union[int, Tensor, Mapping[str, Any]]


def call_model(model, x: Tensor, t: Tensor, cond: Optional[Cond], **extra):
    """``model(x, t)`` without a condition, ``model(x, t, **cond)`` for a dict, ``model(x, t, cond)`` otherwise;
    ``extra`` keywords (e.g. EDM's ``augment_labels``) are passed as well."""
    if cond is None:
        return model(x, t, **extra)
    if isinstance(cond, Mapping):
        return model(x, t, **cond, **extra)
    return model(x, t, cond, **extra)


def label_count(model) -> Optional[int]:
    """K of a class-conditional model (a ``num_classes`` attribute), else None."""
    k = getattr(model, "num_classes", None)
    return None if k is None else int(k)


def model_null(model):
    """The model's null condition ∅: its ``null_cond`` attribute, else the index ``num_classes`` of a
    class-conditional model (one whose forward takes ``cond``: a classifier has ``num_classes`` too), else None
    (the caller must name one)."""
    null = getattr(model, "null_cond", None)
    return model_classes(model) if null is None else null


def accepted_keys(model) -> Optional[List[str]]:
    """The keyword names a dict condition may use: the parameters of the model's forward after (x, t), looked up
    through wrappers that take ``**kwargs`` (a `scoresde.ScoreModel`'s ``net``, DDP's ``module``, a diffusers
    score's ``unet``, a `scoresde.Score`'s ``fn``); None when any name goes."""
    target = model
    for _ in range(8):
        fn = target.forward if isinstance(target, torch.nn.Module) else target
        if not accepts_any_keyword(fn):
            return signature_parameters(fn)[2:]
        target = next((getattr(target, a) for a in ("net", "module", "unet", "fn")
                       if callable(getattr(target, a, None))), None)
        if target is None:
            return None
    return None


def check_cond(cond: Cond, batch: int, *, model=None, num_classes: Optional[int] = None, device=None,
               null_allowed: bool = True, what: str = "cond") -> Cond:
    """``cond`` checked against a batch of ``batch`` samples and moved to ``device``.

    Labels (an int, or an integer tensor of shape (B,) when the model has ``num_classes``) are checked by
    `check_labels` (0 … K − 1, and K = ∅ when ``null_allowed``); a tensor must be (B, ...) or (1, ...) (repeated);
    a dict is checked entry by entry, and its keys against the model's parameters (``model`` given).
    """
    if isinstance(cond, Mapping):
        keys = accepted_keys(model) if model is not None else None
        unknown = [k for k in cond if not isinstance(k, str) or (keys is not None and k not in keys)]
        if unknown:
            name = type(model).__name__ if model is not None else "the model"
            takes = f"it takes {keys} besides (x, t)" if keys is not None else "keys must be strings"
            raise ValueError(f"{what} has keys {unknown} that {name} does not take as keyword arguments; {takes}")
        return {k: None if v is None else check_cond(
            v, batch, num_classes=num_classes if k == "cond" else None, device=device, null_allowed=null_allowed,
            what=f"{what}[{k!r}]") for k, v in cond.items()}
    labels = num_classes is not None or isinstance(cond, int) or (
        torch.is_tensor(cond) and not cond.is_floating_point() and not cond.is_complex()
        and cond.dtype != torch.bool and cond.dim() <= 1)
    if labels:
        return check_labels(cond, batch, num_classes, device=device, null_allowed=null_allowed)
    if not torch.is_tensor(cond):
        raise TypeError(f"{what} must be class labels (an int or (B,) long tensor), a tensor (B, ...) or a dict of "
                        f"them; got {type(cond).__name__}")
    if cond.dim() == 0:
        raise ValueError(f"{what} must have a batch dimension, shape (B, ...) = ({batch}, ...); got a 0-d tensor")
    if cond.shape[0] == 1 and batch != 1:
        cond = cond.expand(batch, *cond.shape[1:])
    if cond.shape[0] != batch:
        raise ValueError(f"{what} has a batch of {cond.shape[0]} rows but x has {batch}: it must have shape "
                         f"(B, ...) = ({batch}, ...), or (1, ...) for one condition shared by the batch; got "
                         f"{tuple(cond.shape)}")
    return cond if device is None else cond.to(device)


def null_condition(null, cond: Cond, batch: int, what: str = "null_cond") -> Cond:
    """The null condition ∅ with cond's structure and shape (B, ...): an index repeated, a tensor broadcast (its
    gradient kept), a dict entry by entry (a null entry for each of cond's keys). The positional ``cond`` is the
    keyword "cond" too: a dict {"cond": c} takes a non-dict null, and a tensor cond the "cond" entry of a dict
    null (a net with ``cond`` and ``image`` conditions)."""
    if isinstance(cond, Mapping):
        present = [k for k, v in cond.items() if v is not None]
        if not isinstance(null, Mapping) and present == ["cond"]:
            null = {"cond": null}
        if not isinstance(null, Mapping):
            raise TypeError(f"cond is a dict with keys {list(cond)}, so {what} must be a dict with those keys; got "
                            f"{type(null).__name__}")
        missing = [k for k in present if k not in null]
        if missing:
            raise ValueError(f"{what} has no entry for cond's keys {missing}: it must give one for each of "
                             f"{sorted(present)}; got {sorted(null)}")
        return {k: None if v is None else null_condition(null[k], v, batch, f"{what}[{k!r}]")
                for k, v in cond.items()}
    if isinstance(null, Mapping) and "cond" in null:
        null = null["cond"]
    if isinstance(null, Mapping):
        raise TypeError(f"{what} is a dict with keys {sorted(null)} but cond is a {type(cond).__name__}: give the "
                        f"condition as a dict with those keys (e.g. {{{next(iter(null))!r}: tensor}}; a data set's "
                        f"cond_name= names the key)")
    if isinstance(null, bool) or not (isinstance(null, int) or torch.is_tensor(null)):
        raise TypeError(f"{what} must be an index (labels), a tensor broadcastable to cond's shape, or a dict; got "
                        f"{type(null).__name__}")
    if torch.is_tensor(null) and null.is_floating_point() and not cond.is_floating_point():
        raise TypeError(f"{what} is a floating tensor but cond holds integers {tuple(cond.shape)} (class labels?): "
                        f"a model that takes a vector condition needs floating conditions (B, D), e.g. "
                        f"sd.data.Dataset(x, cond=...) or --data.cond_key, not a labelled data set")
    if isinstance(null, int) or (not null.is_floating_point() and null.dim() == 0):
        if cond.is_floating_point():
            raise TypeError(f"{what} is an index ({int(null)}) but cond is a floating tensor "
                            f"{tuple(cond.shape)}: give a tensor broadcastable to it (e.g. torch.zeros({cond.shape[-1]}))")
        return torch.full_like(cond, int(null))
    null = null.to(device=cond.device, dtype=cond.dtype)
    try:
        return torch.broadcast_to(null, cond.shape)
    except RuntimeError:
        raise ValueError(f"{what} of shape {tuple(null.shape)} does not broadcast to cond's shape "
                         f"{tuple(cond.shape)}") from None


def concat_cond(first: Cond, second: Cond) -> Cond:
    """Two conditions stacked along the batch (a dict entry by entry), for one call on a doubled batch."""
    if isinstance(first, Mapping):
        return {k: None if v is None else concat_cond(v, second[k]) for k, v in first.items()}
    return torch.cat([first, second])


def where_rows(mask: Tensor, chosen: Cond, other: Cond) -> Cond:
    """Row i of ``chosen`` where mask[i], else of ``other`` (a dict entry by entry); gradients flow to both."""
    if isinstance(chosen, Mapping):
        return {k: None if v is None else where_rows(mask, v, other[k]) for k, v in chosen.items()}
    return torch.where(mask.reshape(-1, *([1] * (chosen.dim() - 1))), chosen, other)


def index_rows(cond: Optional[Cond], index) -> Optional[Cond]:
    """``cond[index]`` (a dict entry by entry): a shard's or a chunk's rows."""
    if cond is None:
        return None
    if isinstance(cond, Mapping):
        return {k: index_rows(v, index) for k, v in cond.items()}
    return cond[index]


def cond_to(cond: Optional[Cond], device=None, dtype: Optional[torch.dtype] = None) -> Optional[Cond]:
    """``cond`` on ``device``, its floating tensors in ``dtype`` when given (a dict entry by entry; an int stays)."""
    if isinstance(cond, Mapping):
        return {k: cond_to(v, device, dtype) for k, v in cond.items()}
    if not torch.is_tensor(cond):
        return cond
    return cond.to(device=device, dtype=dtype if dtype is not None and cond.is_floating_point() else None)


def cond_rows(cond: Cond) -> Optional[int]:
    """The batch size of a condition (its first tensor's), or None for an int."""
    if isinstance(cond, Mapping):
        return next((n for n in (cond_rows(v) for v in cond.values() if v is not None) if n is not None), None)
    return int(cond.shape[0]) if torch.is_tensor(cond) and cond.dim() > 0 else None


def drop_cond(cond: Cond, probability: float, null, generator: Optional[torch.Generator] = None) -> Cond:
    """Replace each row's condition by the null one with the given probability (condition dropout for
    classifier-free training): one uniform per row from ``generator``, the whole row at once for a dict."""
    if not 0.0 <= float(probability) <= 1.0:
        raise ValueError(f"the condition dropout probability must be in [0, 1]; got {probability!r}")
    batch = cond_rows(cond)
    first = next(iter(v for v in _leaves(cond)))
    u = torch.rand((batch,), generator=generator, device=first.device)
    return where_rows(u < float(probability), null_condition(null, cond, batch), cond)


def _leaves(cond):
    if isinstance(cond, Mapping):
        for v in cond.values():
            if v is not None:
                yield from _leaves(v)
    else:
        yield cond
