"""Conditions beyond class labels (`scoresde.guidance.condition`): tensors and dicts through conditional scores,
classifier-free guidance, the losses, the likelihood, the adapters, data sets and the Trainer.

The toy conditional model is the exact score of x | y ~ N(y, I) pushed through a VP SDE,
∇ log p_t(x | y) = −(x − s y)/(s² + σ²), written with +, −, ×, ÷ only, so that a row computed inside a doubled batch
rounds exactly as the same row alone (elementwise IEEE operations); comparisons of the same arithmetic are then
exact, and the rest are bounded by float64 rounding.
"""
import math

import numpy as np
import pytest
import torch

import scoresde as sd
from scoresde.guidance.condition import (call_model, concat_cond, drop_cond, index_rows,
                                         null_condition)

EPS64 = torch.finfo(torch.float64).eps


class Shifted(torch.nn.Module):
    """The exact score of x | y ~ N(y, I) on a VP SDE, called model(x, t, y); y = NaN rows → N(0, 2 I)'s score
    (the prior of y ~ N(0, I)), so ``null_cond`` = NaN is the unconditional score."""

    def __init__(self, sde, dim=2):
        super().__init__()
        self.sde, self.dim = sde, dim
        self.calls = []
        self.null_cond = torch.full((dim,), float("nan"), dtype=torch.float64)

    def forward(self, x, t, cond):
        self.calls.append(x.shape[0])
        s, sigma = sd.conversions.scale_std(self.sde, t, x)
        null = torch.isnan(cond).all(1, keepdim=True)
        y = torch.where(null, torch.zeros_like(cond), cond)
        var = torch.where(null, 2 * s * s + sigma * sigma, s * s + sigma * sigma)
        return -(x - s * y) / var


class Keywords(torch.nn.Module):
    """model(x, t, *, shift, scale): a dict condition spread as keywords."""

    null_cond = {"shift": torch.zeros(2, dtype=torch.float64), "scale": torch.ones(1, dtype=torch.float64)}

    def forward(self, x, t, shift=None, scale=None):
        return -(x - shift) * scale


def _batch(n=6, seed=0):
    g = torch.Generator().manual_seed(seed)
    return (torch.randn(n, 2, generator=g, dtype=torch.float64), torch.randn(n, 2, generator=g, dtype=torch.float64),
            0.1 + 0.8 * torch.rand(n, generator=g, dtype=torch.float64))


def test_call_model_routes_tensor_dict_and_none():
    seen = {}

    def model(x, t, cond=None, **named):
        seen.update(cond=cond, named=named)
        return x

    x, y, t = _batch()
    call_model(model, x, t, None)
    assert seen == {"cond": None, "named": {}}
    call_model(model, x, t, y)
    assert seen["cond"] is y and seen["named"] == {}
    call_model(model, x, t, {"a": y})
    assert seen["cond"] is None and seen["named"]["a"] is y


def test_conditional_score_binds_a_tensor_for_any_callable():
    sde = sd.VPSDE()
    model = Shifted(sde)
    x, y, t = _batch()
    score = sd.conditional_score(model, y)
    assert isinstance(score, sd.Score) and score.network_evaluations == 1
    assert torch.equal(score(x, t), model(x, t, y))
    # one condition shared by the batch: (1, m) is repeated
    assert torch.equal(sd.conditional_score(model, y[:1])(x, t), model(x, t, y[:1].expand(6, 2)))


def test_classifier_free_guidance_on_a_tensor_condition_is_the_formula_in_one_doubled_call():
    sde = sd.VPSDE()
    model = Shifted(sde)
    x, y, t = _batch()
    w = 1.5
    guided = sd.classifier_free_guidance(model, y, scale=w)              # null: model.null_cond (NaN rows)
    assert guided.network_evaluations == 2
    model.calls.clear()
    out = guided(x, t)
    assert model.calls == [12]                                           # one call on the doubled batch
    expected = (1 + w) * model(x, t, y) - w * model(x, t, model.null_cond.expand(6, 2))
    torch.testing.assert_close(out, expected, rtol=8 * EPS64, atol=0)
    # the exact tilted law: N(y, 1)^(1+w) N(0, 2)^(-w) per coordinate at t → 0 has precision (1+w) − w/2 and
    # mean (1+w) y / ((1+w) − w/2); its score at x is −precision (x − mean)
    tiny = torch.full((6,), 1e-6, dtype=torch.float64)
    s, sigma = sd.conversions.scale_std(sde, tiny, x)
    precision_c, precision_u = 1 / (s * s + sigma * sigma), 1 / (2 * s * s + sigma * sigma)
    precision = (1 + w) * precision_c - w * precision_u
    mean = (1 + w) * precision_c * s * y / precision
    torch.testing.assert_close(guided(x, tiny), -precision * (x - mean), rtol=64 * EPS64, atol=64 * EPS64)


def test_classifier_free_guidance_takes_a_given_null_for_a_plain_callable():
    x, y, t = _batch()

    def plain(x, t, cond):                   # no null_cond, no num_classes
        return -(x - cond)

    with pytest.raises(ValueError, match="needs the null condition"):
        sd.classifier_free_guidance(plain, y, scale=1.0)
    guided = sd.classifier_free_guidance(plain, y, scale=2.0, null_cond=torch.zeros(2, dtype=torch.float64))
    torch.testing.assert_close(guided(x, t), 3 * plain(x, t, y) - 2 * plain(x, t, torch.zeros_like(y)),
                               rtol=4 * EPS64, atol=4 * EPS64)
    with pytest.raises(ValueError, match=r"null_cond of shape \(3,\) does not broadcast to cond's shape \(6, 2\)"):
        sd.classifier_free_guidance(plain, y, scale=2.0, null_cond=torch.zeros(3))(x, t)
    with pytest.raises(TypeError, match="null_cond is an index"):
        sd.classifier_free_guidance(plain, y, scale=2.0, null_cond=0)(x, t)


def test_dict_conditions_are_keywords_checked_against_the_model():
    x, y, t = _batch()
    model = Keywords()
    cond = {"shift": y, "scale": torch.full((6, 1), 2.0, dtype=torch.float64)}
    assert torch.equal(sd.conditional_score(model, cond)(x, t), model(x, t, **cond))
    guided = sd.classifier_free_guidance(model, cond, scale=1.0)
    expected = 2 * model(x, t, **cond) - model(x, t, shift=torch.zeros_like(y), scale=torch.ones(6, 1).double())
    torch.testing.assert_close(guided(x, t), expected, rtol=4 * EPS64, atol=4 * EPS64)
    with pytest.raises(ValueError, match=r"keys \['offset'\].*takes \['shift', 'scale'\]"):
        sd.conditional_score(model, {"offset": y})(x, t)
    with pytest.raises(ValueError, match=r"no entry for cond's keys \['scale'\]"):
        sd.classifier_free_guidance(model, cond, scale=1.0, null_cond={"shift": torch.zeros(2)})(x, t)
    with pytest.raises(TypeError, match="must be a dict with those keys"):
        sd.classifier_free_guidance(model, cond, scale=1.0, null_cond=torch.zeros(2))(x, t)
    # nested dicts (diffusers' added_cond_kwargs) are concatenated entry by entry
    nested = {"a": y, "b": {"c": y[:, :1]}}
    both = concat_cond(nested, null_condition({"a": torch.zeros(2), "b": {"c": torch.ones(1)}}, nested, 6))
    assert both["a"].shape == (12, 2) and both["b"]["c"].shape == (12, 1)
    assert torch.equal(both["b"]["c"][6:], torch.ones(6, 1, dtype=torch.float64))


def test_bad_conditions_are_named():
    x, y, t = _batch()
    model = Shifted(sd.VPSDE())
    with pytest.raises(ValueError, match=r"batch of 4 rows but x has 6.*\(6, \.\.\.\)"):
        sd.conditional_score(model, y[:4])(x, t)
    with pytest.raises(ValueError, match="batch dimension"):
        sd.conditional_score(model, torch.tensor(1.0))(x, t)
    with pytest.raises(TypeError, match="a tensor \\(B, ...\\) or a dict"):
        sd.conditional_score(model, [1.0, 2.0])(x, t)
    with pytest.raises(ValueError, match="needs a condition"):
        sd.conditional_score(model, None)
    # labels keep their checks
    labelled = sd.ScoreModel(sd.nets.MLP(2, hidden=8, depth=1, num_classes=3), sd.VPSDE()).double()
    with pytest.raises(TypeError, match="long"):
        sd.conditional_score(labelled, torch.zeros(6, dtype=torch.float64))(x, t)
    with pytest.raises(ValueError, match="0 … 2, or 3 for no label"):
        sd.conditional_score(labelled, 7)(x, t)


def test_condition_dropout_replaces_whole_rows_by_the_null_and_keeps_its_gradient():
    g = torch.Generator().manual_seed(3)
    n, p = 4000, 0.3
    cond = {"v": torch.randn(n, 3, generator=g), "image": torch.randn(n, 1, 2, 2, generator=g)}
    null = {"v": torch.nn.Parameter(torch.full((3,), 7.0)), "image": torch.nn.Parameter(torch.full((1, 1, 1), -7.0))}
    dropped = drop_cond(cond, p, null, generator=torch.Generator().manual_seed(0))
    rows_v = (dropped["v"] == 7.0).all(1)
    rows_image = (dropped["image"] == -7.0).flatten(1).all(1)
    assert torch.equal(rows_v, rows_image)                             # a row is dropped as a whole
    assert abs(float(rows_v.double().mean()) - p) < 5 * math.sqrt(p * (1 - p) / n)
    assert torch.equal(dropped["v"][~rows_v], cond["v"][~rows_v])
    (dropped["v"].sum() + dropped["image"].sum()).backward()
    k = int(rows_v.sum())
    assert torch.equal(null["v"].grad, torch.full((3,), float(k))) and float(null["image"].grad) == k * 4
    # labels draw the same uniforms as the label dropout they replace
    labels = torch.arange(50) % 5
    assert torch.equal(drop_cond(labels, 0.5, 5, torch.Generator().manual_seed(1)),
                       sd.guidance.drop_labels(labels, 0.5, 5, torch.Generator().manual_seed(1)))


def test_dsm_loss_shards_a_dict_condition_like_the_data():
    sde = sd.VPSDE()
    model = Keywords()
    x, y, _ = _batch(8)
    cond = {"shift": y, "scale": torch.full((8, 1), 0.5, dtype=torch.float64)}
    whole = sd.dsm_loss(sde, model, x, cond=cond, generator=torch.Generator().manual_seed(0), reduce="none")
    parts = [sd.dsm_loss(sde, model, x, cond=cond, generator=torch.Generator().manual_seed(0), reduce="none",
                         shard=(r, 2)) for r in range(2)]
    assert torch.equal(parts[0], whole[0::2]) and torch.equal(parts[1], whole[1::2])
    assert torch.equal(index_rows(cond, slice(1, None, 2))["shift"], y[1::2])


def test_log_likelihood_of_a_condition_is_that_of_the_bound_score():
    sde = sd.VPSDE()
    model = Shifted(sde)
    x, y, _ = _batch(4)
    options = dict(divergence="exact", rtol=1e-8, atol=1e-8)
    direct = sd.log_likelihood(sde, model, x, cond=y, **options).log_prob
    # the truth: p_t(x | y) = N(s y, (s² + σ²) I) = N(s y, I) on VP. The solve reads log p_eps(x) as
    # log π(x_T) + ∫ div with the prior π (sde.prior_log_prob) where p_T(· | y) = N(s_T y, I): correct by the log-ratio
    # at its own end point x_T, leaving the solver's error
    res = sd.log_likelihood(sde, model, x, cond=y, **options)
    eps, T = torch.full((4,), 1e-5, dtype=torch.float64), torch.full((4,), sde.T, dtype=torch.float64)
    exact = torch.distributions.Normal(sde.scale(eps)[:, None] * y, 1.0).log_prob(x).sum(1)
    end = torch.distributions.Normal(sde.scale(T)[:, None] * y, 1.0).log_prob(res.z).sum(1)
    prior = sde.prior_log_prob(res.z)
    assert float((direct - prior + end - exact).abs().max()) < 1e-5
    data = sd.data.Dataset(x, cond=y)
    res = sd.evaluate_likelihood(sde, model, data, batch_size=3, cond=y, **options)   # chunks of 3 and 1 rows
    bits = -direct / (2 * math.log(2))
    torch.testing.assert_close(res.per_sample, bits, rtol=0, atol=1e-5)    # chunked solves: the solver's tolerance


def test_adapters_pass_per_call_and_bound_conditions():
    sde = sd.EDMSDE()
    x, y, t = _batch()
    denoiser = lambda x, sigma, cond: cond + 0 * x          # noqa: E731  D(x̃, σ̃; c) = c
    score = sd.from_denoiser(denoiser, sde)
    s, sigma = sd.conversions.scale_std(sde, t, x)
    expected = (s * y - x) / sigma ** 2
    torch.testing.assert_close(sd.conditional_score(score, y)(x, t), expected, rtol=4 * EPS64, atol=0)
    torch.testing.assert_close(sd.from_denoiser(denoiser, sde, cond=y)(x, t), expected, rtol=4 * EPS64, atol=0)
    guided = sd.classifier_free_guidance(score, y, scale=1.0, null_cond=torch.zeros(2, dtype=torch.float64))
    torch.testing.assert_close(guided(x, t), 2 * expected - (0 - x) / sigma ** 2, rtol=16 * EPS64, atol=16 * EPS64)
    # flow_matching's model_extras: a dict spread as keywords
    velocity = lambda x, t, *, target: target - x           # noqa: E731
    v_score = sd.from_velocity(velocity, sd.RectifiedFlowSDE(), cond={"target": y})
    assert v_score(x, t).shape == x.shape
    with pytest.raises(ValueError, match="does not take"):
        sd.from_velocity(velocity, sd.RectifiedFlowSDE(), cond={"goal": y})(x, t)


class _Scheduler:
    def __init__(self):
        self.alphas_cumprod = torch.cumprod(1 - torch.linspace(1e-4, 0.02, 1000, dtype=torch.float64), 0)
        self.config = type("Config", (), {"prediction_type": "epsilon"})()


def test_from_diffusers_sends_labels_embeddings_and_keywords_where_diffusers_takes_them():
    seen = {}

    def unet(sample, timestep, encoder_hidden_states=None, class_labels=None, added_cond_kwargs=None):
        seen.update(ehs=encoder_hidden_states, labels=class_labels, added=added_cond_kwargs)
        return (torch.zeros_like(sample),)

    x, y, t = _batch()
    sde, score = sd.from_diffusers(unet, _Scheduler())
    score(x, t, torch.arange(6))
    assert torch.equal(seen["labels"], torch.arange(6)) and seen["ehs"] is None
    emb = torch.randn(6, 4, 8, dtype=torch.float64)
    score(x, t, emb)
    assert seen["ehs"] is emb and seen["labels"] is None
    extra = {"text_embeds": torch.randn(6, 5, dtype=torch.float64)}
    sd.conditional_score(score, {"encoder_hidden_states": emb, "added_cond_kwargs": extra})(x, t)
    assert seen["ehs"] is emb and torch.equal(seen["added"]["text_embeds"], extra["text_embeds"])
    guided = sd.classifier_free_guidance(score, {"encoder_hidden_states": emb, "added_cond_kwargs": extra}, 3.0,
                                         null_cond={"encoder_hidden_states": torch.zeros(4, 8),
                                                    "added_cond_kwargs": {"text_embeds": torch.zeros(5)}})
    guided(x, t)
    assert seen["ehs"].shape == (12, 4, 8) and seen["added"]["text_embeds"].shape == (12, 5)
    with pytest.raises(ValueError, match=r"keys \['prompt'\]"):
        sd.conditional_score(score, {"prompt": emb})(x, t)
    _, bound = sd.from_diffusers(unet, _Scheduler(), cond={"encoder_hidden_states": emb})
    bound(x, t)
    assert seen["ehs"] is emb


def test_data_sets_carry_conditions_row_by_row(tmp_path):
    x = torch.arange(40, dtype=torch.float32).reshape(20, 2)
    data = sd.data.Dataset(x, cond={"double": 2 * x, "first": x[:, :1]})
    xb, cb = next(data.batches(7, seed=0))
    assert torch.equal(cb["double"], 2 * xb) and torch.equal(cb["first"], xb[:, :1])
    with pytest.raises(ValueError, match="batch of 3 rows but x has 20"):
        sd.data.Dataset(x, cond=torch.zeros(3, 1))
    np.savez(tmp_path / "pairs.npz", x=x.numpy(), y=(3 * x).numpy())
    loaded = sd.data.load("array", path=str(tmp_path / "pairs.npz"), key="x", cond_key="y", test_fraction=0.25)
    assert loaded.cond.shape == (15, 2) and torch.equal(loaded.cond, 3 * loaded.x)
    test = sd.data.load("array", path=str(tmp_path / "pairs.npz"), key="x", cond_key="y", split="test",
                        test_fraction=0.25)
    assert torch.equal(test.cond, 3 * test.x) and len(test) == 5


def test_trainer_trains_a_vector_conditional_net_with_a_learned_null():
    torch.manual_seed(0)
    sde = sd.VPSDE()
    net = sd.nets.MLP(2, hidden=16, depth=1, cond_dim=3)
    model = sd.ScoreModel(net, sde)
    g = torch.Generator().manual_seed(0)
    x = torch.randn(64, 2, generator=g)
    data = sd.data.Dataset(x, cond=torch.randn(64, 3, generator=g))
    trainer = sd.Trainer(model, sde, data, sd.TrainConfig(steps=2, batch_size=32, cond_dropout=0.5))
    assert trainer.conditional and trainer.cond_dropout == 0.5
    before = net.null_cond.detach().clone()
    trainer.train()
    assert not torch.equal(before, net.null_cond.detach())               # the null embedding learns
    assert trainer.sample(5).shape == (5, 2)
    with pytest.raises(ValueError, match="has no labels or cond"):
        sd.Trainer(model, sde, sd.data.Dataset(x), sd.TrainConfig(steps=1))


def test_trainer_dropout_puts_the_models_null_in_the_dropped_rows():
    sde = sd.VPSDE()

    class Recording(torch.nn.Module):
        null_cond = torch.full((2,), -9.0)

        def __init__(self):
            super().__init__()
            self.w = torch.nn.Parameter(torch.zeros(()))
            self.seen = []

        def forward(self, x, t, cond):
            self.seen.append(cond.detach().clone())
            return self.w * x

    model = Recording()
    n = 512
    g = torch.Generator().manual_seed(1)
    data = sd.data.Dataset(torch.randn(n, 2, generator=g), cond=torch.rand(n, 2, generator=g))
    sd.Trainer(model, sde, data, sd.TrainConfig(steps=10, batch_size=128, cond_dropout=0.25)).train()
    seen = torch.cat(model.seen)
    null = (seen == -9.0).all(1)
    assert bool(((seen >= 0) | null[:, None]).all())                    # every other row is a real condition
    assert abs(float(null.double().mean()) - 0.25) < 5 * math.sqrt(0.25 * 0.75 / len(seen))


@pytest.mark.slow
def test_a_conditional_mlp_learns_most_of_the_information_of_a_continuous_observation():
    """Train sd.nets.MLP(2, cond_dim=1) on pairs (x0, y = x0[0] + 0.3 n) of a four-component mixture; the held-out
    conditional NLL −log p_θ(x0 | y) is compared with the exact −log p(x0 | y) of the oracle's posteriors on the
    same points. Their paired mean difference estimates E_y KL(p(· | y) ‖ p_θ(· | y)) ≥ 0 (up to the ODE's
    tolerance, 1e-5). The bound: the gap is below half the mutual information I(X; Y) (≈ 1.3 nats: what y tells
    about x0), i.e. the model uses most of the observation, and the same network's null condition (its
    unconditional model) is further from p(x0 | y) by at least that much. Measured (600 steps, this seed): gap
    0.34 ± 0.04 nats against I = 1.30."""
    torch.manual_seed(0)
    prior = sd.GaussianMixture(torch.tensor([[1.5, 0.0], [-1.5, 0.0], [0.0, 1.5], [0.0, -1.5]]), torch.full((4,), 0.3))
    A, noise = torch.tensor([[1.0, 0.0]], dtype=torch.float64), 0.3

    def pairs(n, seed):
        g = torch.Generator().manual_seed(seed)
        x = prior.sample(n, g)
        return x.float(), (x @ A.T + noise * torch.randn(n, 1, generator=g, dtype=torch.float64)).float()

    sde = sd.VPSDE()
    x, y = pairs(20000, 1)
    x_test, y_test = pairs(200, 2)
    model = sd.ScoreModel(sd.nets.MLP(2, hidden=64, depth=2, cond_dim=1), sde)
    trainer = sd.Trainer(model, sde, sd.data.Dataset(x, cond=y),
                         sd.TrainConfig(steps=600, batch_size=256, lr=2e-3, seed=0, progress=False))
    trainer.train()
    exact = -prior.posterior(sd.LinearMeasurement(A, y_test.double(), noise_std=noise)).log_prob(x_test.double())
    information = float((-prior.log_prob(x_test.double()) - exact).mean())
    options = dict(divergence="exact", rtol=1e-5, atol=1e-5)
    with trainer.ema.average_parameters():
        conditional = -sd.log_likelihood(sde, model, x_test, cond=y_test, **options).log_prob.double()
        unconditional = -sd.log_likelihood(sde, model, x_test, cond=model.null_cond.detach()[None],
                                           **options).log_prob.double()
    gap = conditional - exact
    se = float(gap.std()) / math.sqrt(len(gap))
    assert information > 1.0                                     # the observation is informative
    assert -3 * se < float(gap.mean()) < information / 2
    assert float((unconditional - conditional).mean()) > information / 2


def test_an_image_conditioned_unet_trains_on_dict_conditions_and_names_a_missing_key():
    """sd.nets.UNet(cond_channels=1)'s null is {"image": (1, 1, 1) parameter}: a data set whose cond is that dict
    trains it (the null image learns); a plain tensor cond is refused with the keys to use."""
    torch.manual_seed(0)
    sde = sd.VPSDE()
    net = sd.nets.UNet(in_channels=1, channels=8, channel_mults=(1,), num_res_blocks=1, attention_resolutions=(),
                       image_size=4, cond_channels=1)
    model = sd.ScoreModel(net, sde)
    x = torch.randn(16, 1, 4, 4, generator=torch.Generator().manual_seed(0))
    data = sd.data.Dataset(x, cond={"image": x.flip(-1)})
    before = net.null_cond["image"].detach().clone()
    sd.Trainer(model, sde, data, sd.TrainConfig(steps=2, batch_size=8, cond_dropout=0.5, progress=False)).train()
    assert not torch.equal(before, net.null_cond["image"].detach())
    trainer = sd.Trainer(model, sde, sd.data.Dataset(x, cond=x.flip(-1)), sd.TrainConfig(steps=1, batch_size=8,
                                                                                          progress=False))
    with pytest.raises(TypeError, match=r"dict with keys \['image'\].*cond_name"):
        trainer.train()


def test_review_cases_a_cond_key_dict_one_label_row_half_precision_thresholds_and_label_data():
    """{"cond": c} is the third argument by name: guidance and dropout use the model's (non-dict) null for it; a
    (1,) label tensor is one class for every sample, like an int; DynamicThreshold on bfloat16 (torch.quantile
    takes float32/64 only: the quantile is taken wider); a vector-conditional net on labelled data is refused
    naming what it needs."""
    sde = sd.VPSDE()
    x, y, t = _batch(4)
    vector = sd.ScoreModel(sd.nets.MLP(2, hidden=8, depth=1, cond_dim=2), sde).double()
    guided = sd.classifier_free_guidance(vector, {"cond": y[:4]}, scale=2.0)
    torch.testing.assert_close(guided(x[:4], t[:4]), sd.classifier_free_guidance(vector, y[:4], scale=2.0)(x[:4], t[:4]),
                               rtol=0, atol=0)
    data = sd.data.Dataset(x.float(), cond={"cond": y.float()})
    sd.Trainer(sd.ScoreModel(sd.nets.MLP(2, hidden=8, depth=1, cond_dim=2), sde), sde, data,
               sd.TrainConfig(steps=1, batch_size=4, progress=False)).train()
    labelled = sd.ScoreModel(sd.nets.MLP(2, hidden=8, depth=1, num_classes=3), sde).double()
    torch.testing.assert_close(sd.conditional_score(labelled, torch.tensor([1]))(x, t),
                               sd.conditional_score(labelled, 1)(x, t), rtol=0, atol=0)
    x0 = torch.linspace(-3, 3, 64, dtype=torch.bfloat16).reshape(2, 32)
    wide = sd.DynamicThreshold(0.9, max_value=2.0)(x0.float())
    torch.testing.assert_close(sd.DynamicThreshold(0.9, max_value=2.0)(x0).float(), wide, rtol=2 ** -7, atol=2 ** -7)
    with pytest.raises(ValueError, match="has class labels only"):
        sd.Trainer(sd.ScoreModel(sd.nets.MLP(2, hidden=8, depth=1, cond_dim=3), sde), sde,
                   sd.data.load("eight_gaussians", n=32), sd.TrainConfig(steps=1, progress=False))
    with pytest.raises(TypeError, match="floating tensor but cond holds integers"):
        null_condition(torch.zeros(3), torch.zeros(4, dtype=torch.long), 4)


def test_the_positional_cond_is_the_keyword_cond_of_a_dict_null():
    """A net with cond and image conditions has the null {"cond": ..., "image": ...}: a tensor cond takes its
    "cond" entry, a dict with some of its keys those entries."""
    null = {"cond": torch.full((2,), 3.0), "image": torch.zeros(1, 1, 1)}
    assert torch.equal(null_condition(null, torch.ones(4, 2), 4), torch.full((4, 2), 3.0))
    only = null_condition(null, {"image": torch.ones(4, 1, 2, 2)}, 4)
    assert list(only) == ["image"] and torch.equal(only["image"], torch.zeros(4, 1, 2, 2))
