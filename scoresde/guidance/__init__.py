"""Conditional scores and guidance: every result is a `scoresde.Score`, so every sampler and
[`scoresde.log_likelihood`][scoresde.log_likelihood] take it unchanged.

    score = sd.conditional_score(model, cond)                                # ∇ log p_t(x | c)
    score = sd.classifier_free_guidance(model, cond, scale=w)                # (1 + w) s_c − w s_∅
    score = sd.classifier_guidance(score_uncond, classifier, cond, scale=γ)  # ∇ log p_t(x) + γ ∇ log p_t(c | x)

A conditional model is called ``model(x, t, cond)``. ``cond`` is class labels ((B,) long indices in [0, K]; the
index K = ``num_classes`` is the null label ∅), any tensor with a batch dimension (an embedding, a measurement,
an image), or a dict of them spread as keywords, ``model(x, t, **cond)`` (`scoresde.guidance.condition`). The
null condition ∅ is an index, a (learned or zero) tensor or a dict; one network trained with condition dropout
is both p(x | c) and p(x). Classifier-free guidance (Ho & Salimans 2022) tilts the conditional law,

    s_w = (1 + w) ∇ log p_t(x | c) − w ∇ log p_t(x) = ∇ log [p_t(x | c)^{1+w} p_t(x)^{−w}],

and is the same formula on ε, x0 or v at fixed (x, t) (each is affine in the score with weights summing to one).
Classifier guidance (Dhariwal & Nichol 2021) with a noise-conditional classifier p_t(c | x) at γ = 1 is exactly
∇ log p_t(x | c) by Bayes' rule.

**Counting.** A sampler's ``res.nfe`` counts calls of the score function; a guided score is a `scoresde.Score` that
says how many network evaluations one call costs (``network_evaluations``), and ``res.network_evaluations`` sums them.
A classifier-free call with w ≠ 0 runs the network once on a doubled batch (2B rows: conditional and null), which
counts as 2 evaluations; at w = 0 it is the conditional model alone (1). A classifier-guided call is 2: the score
model, and the classifier with its gradient (one forward and one backward pass).
"""
from .classifier import classifier_guidance
from .conditional import classifier_free_guidance, conditional_score, unconditional_score
from .condition import Cond, call_model, check_cond, drop_cond, model_null, null_condition
from .labels import Labels, check_labels, drop_labels, model_classes

__all__ = ["conditional_score", "unconditional_score", "classifier_free_guidance", "classifier_guidance", "check_labels", "drop_labels",
           "model_classes", "Labels", "Cond", "call_model", "check_cond", "drop_cond", "model_null", "null_condition"]
