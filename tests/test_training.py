"""Trainer, EMA and checkpoints: exact resume, NaN handling, weights_only checkpoints, and math on oracles."""
import math
import os

import pytest
import torch
from torch import nn

import scoresde as sd
from scoresde.training import NonFiniteLossError, load_checkpoint, save_checkpoint


@pytest.fixture(autouse=True, scope="module")
def one_thread():
    """These tiny models run fastest on one thread; on a loaded 2-core machine, two threads of a small conv net
    spend most of their time waiting for each other (measured: 0.15 s vs 1 s per U-Net step)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def _quiet(**kwargs):
    """A TrainConfig without a progress bar (tests) and with the given fields."""
    return sd.TrainConfig(progress=False, **kwargs)


class GaussianScore(nn.Module):
    """Exact score family of N(m, c² I) diffused by a linear SDE, with a learnable mean m:

    score(x, t) = −(x − s m) / (s² c² + σ²). It contains the true score when m = μ, so m = μ minimises DSM.
    """

    def __init__(self, sde, dim, c):
        super().__init__()
        self.sde, self.c = sde, c
        self.m = nn.Parameter(torch.zeros(dim))

    def forward(self, x, t):
        s = self.sde.scale(t)[:, None]
        var = s * s * self.c**2 + self.sde.std(t)[:, None] ** 2
        return -(x - s * self.m) / var


class MixtureScore(nn.Module):
    """The oracle's exact score as an nn.Module (one unused parameter, so the Trainer accepts it)."""

    def __init__(self, mixture, sde):
        super().__init__()
        self.mixture, self.sde = mixture, sde
        self.unused = nn.Parameter(torch.zeros(()))

    def forward(self, x, t):
        return self.mixture.score_t(self.sde, x, t)


class NaNAtStep(nn.Module):
    """Wraps a model; its k-th forward call in training mode returns NaN (one call per training step)."""

    def __init__(self, model, k):
        super().__init__()
        self.model, self.k, self.calls = model, k, 0

    def forward(self, x, t):
        out = self.model(x, t)
        if self.training:
            self.calls += 1
            if self.calls == self.k:
                return out * float("nan")
        return out


# -- EMA -----------------------------------------------------------------------------------------------------
def test_ema_matches_closed_form_average():
    # θ̄_n = d^n θ_0 + Σ_k (1 − d) d^{n−k} θ_k for a fixed decay (no warm-up): checked in float64 to 1e-12.
    torch.manual_seed(0)
    model = nn.Linear(3, 2).double()
    ema = sd.EMA(model, decay=0.9, warmup=False)
    thetas = [model.weight.detach().clone()]
    for k in range(1, 6):
        with torch.no_grad():
            model.weight.copy_(torch.randn(2, 3, dtype=torch.float64))
        thetas.append(model.weight.detach().clone())
        ema.update()
    d, n = 0.9, 5
    expected = d**n * thetas[0] + sum((1 - d) * d ** (n - k) * thetas[k] for k in range(1, n + 1))
    torch.testing.assert_close(ema.shadow["weight"], expected, rtol=0, atol=1e-12)


def test_ema_warmup_decay_and_swap():
    model = nn.Linear(2, 2)
    ema = sd.EMA(model, decay=0.5, warmup=True)
    decays = []
    for _ in range(12):
        decays.append(ema.current_decay())
        ema.update()
    # min(decay, (1 + n)/(10 + n)): 0.1, 2/11, 3/12, ... capped at 0.5 from n = 8 on ((1+8)/(10+8) = 0.5).
    assert decays[:3] == pytest.approx([0.1, 2 / 11, 3 / 12])
    assert decays[8:] == pytest.approx([0.5] * 4)
    with torch.no_grad():
        model.weight.fill_(3.0)
    ema.shadow["weight"].fill_(-1.0)
    with ema.average_parameters():
        assert bool((model.weight == -1.0).all())
    assert bool((model.weight == 3.0).all())
    other = nn.Linear(2, 2)
    ema.copy_to(other)
    assert bool((other.weight == -1.0).all())
    fresh = sd.EMA(nn.Linear(2, 2), decay=0.5)
    fresh.load_state_dict(ema.state_dict())
    assert fresh.num_updates == 12 and torch.equal(fresh.shadow["weight"], ema.shadow["weight"])
    with pytest.raises(ValueError, match="weight"):
        sd.EMA(nn.Linear(2, 3)).load_state_dict(ema.state_dict())
    with pytest.raises(ValueError, match="decay"):
        sd.EMA(model, decay=1.0)


# -- config --------------------------------------------------------------------------------------------------
def test_config_validation_and_learning_rate_warmup():
    with pytest.raises(ValueError, match="steps"):
        sd.TrainConfig(steps=0)
    with pytest.raises(ValueError, match="weighting"):
        sd.TrainConfig(weighting="nope")
    with pytest.raises(TypeError, match="bogus"):
        sd.TrainConfig.from_dict({"bogus": 1})
    c = sd.TrainConfig(lr=1e-3, warmup_steps=4)
    assert sd.TrainConfig.from_dict(c.to_dict()) == c
    sde = sd.VPSDE()
    trainer = sd.Trainer(GaussianScore(sde, 2, 1.0), sde, torch.zeros(8, 2), c)
    assert [trainer.learning_rate(n) for n in range(6)] == pytest.approx([2.5e-4, 5e-4, 7.5e-4, 1e-3, 1e-3, 1e-3])


# -- exact resume --------------------------------------------------------------------------------------------
def _make(kind, out_dir, steps):
    """A small model, SDE, data and config. The U-Net case uses dropout (global RNG state) and digit-like
    17-level data with dequantization (the data iterator's RNG) in epochs (its permutation state)."""
    sde = sd.VPSDE()
    if kind in ("mlp", "mlp_conditional"):
        conditional = kind == "mlp_conditional"      # labels in the batches, label dropout from the loss generator
        net = sd.nets.MLP(2, hidden=16, depth=1, time_embedding_dim=8, num_classes=8 if conditional else None)
        data = sd.data.load("eight_gaussians", n=256)
        config = _quiet(steps=steps, batch_size=16, lr=1e-3, warmup_steps=3, ema_decay=0.9,
                        weighting="likelihood", time_distribution="importance", out_dir=out_dir, seed=3,
                        cond_dropout=0.3 if conditional else None)
    else:
        net = sd.nets.UNet(in_channels=1, channels=8, channel_mults=(1, 2), attention_resolutions=(4,),
                           dropout=0.2, time_embedding_dim=16, image_size=8)
        values = torch.randint(0, 17, (32, 1, 8, 8), generator=torch.Generator().manual_seed(0))
        data = sd.data.Dataset(-1 + values * (2 / 16), levels=17, data_range=(-1.0, 1.0), dequantize=True)
        config = _quiet(steps=steps, batch_size=4, lr=1e-3, grad_clip=0.5, out_dir=out_dir, seed=5)
    return sd.ScoreModel(net, sde), sde, data, config


@pytest.mark.parametrize("kind", ["mlp", "mlp_conditional", "unet"])
def test_resume_continues_exactly(kind, tmp_path):
    n = 2
    torch.manual_seed(0)
    model_a, sde, data, config = _make(kind, str(tmp_path / "a"), 2 * n)
    init = {k: v.clone() for k, v in model_a.state_dict().items()}
    sd.Trainer(model_a, sde, data, config).train()

    torch.manual_seed(0)
    model_b, sde, data, config = _make(kind, str(tmp_path / "b"), 2 * n)
    assert all(torch.equal(init[k], v) for k, v in model_b.state_dict().items())
    first = sd.Trainer(model_b, sde, data, config)
    first.train(num_steps=n)
    path = first.save_checkpoint()
    torch.manual_seed(1234)                                   # disturb the global RNG: resume must restore it
    model_c, sde, data, config = _make(kind, str(tmp_path / "b"), 2 * n)
    second = sd.Trainer(model_c, sde, data, config, resume=True)
    assert second.global_step == n and second.last_checkpoint == path
    second.train()
    assert second.global_step == 2 * n

    for key, value in model_a.state_dict().items():
        assert torch.equal(value, model_c.state_dict()[key]), key
    ema_a = torch.load(str(tmp_path / "a" / "checkpoint.pt"), weights_only=True)["ema"]["shadow"]
    for key, value in ema_a.items():
        assert torch.equal(value, second.ema.shadow[key]), key


def test_checkpoint_is_weights_only_and_atomic(tmp_path):
    torch.manual_seed(0)
    model, sde, data, config = _make("mlp", str(tmp_path), 2)
    trainer = sd.Trainer(model, sde, data, config)
    trainer.train()
    path = tmp_path / "checkpoint.pt"
    payload = torch.load(str(path), weights_only=True)       # plain containers and tensors only
    assert payload["step"] == 2 and payload["config"]["steps"] == 2
    assert set(payload) >= {"model", "ema", "optimizer", "rng", "data", "config", "step"}
    before = path.read_bytes()
    with pytest.raises(Exception):
        save_checkpoint({"format": "x", "bad": lambda: 0}, str(path))   # cannot be pickled
    assert path.read_bytes() == before                        # the old file is intact ...
    assert sorted(os.listdir(tmp_path)) == ["checkpoint.pt", "metrics.jsonl"]  # ... and no temp file is left
    with pytest.raises(ValueError, match="not a valid scoresde checkpoint"):
        torch.save({"model": {}}, str(tmp_path / "other.pt"))
        load_checkpoint(str(tmp_path / "other.pt"))


def test_mismatched_checkpoint_names_keys(tmp_path):
    torch.manual_seed(0)
    model, sde, data, config = _make("mlp", str(tmp_path), 1)
    sd.Trainer(model, sde, data, config).train()
    wider = sd.ScoreModel(sd.nets.MLP(2, hidden=32, depth=2, time_embedding_dim=8), sde)
    trainer = sd.Trainer(wider, sde, data, config)
    with pytest.raises(ValueError) as info:
        trainer.resume()
    message = str(info.value)
    assert "net.input.weight" in message and "(16, 2)" in message and "(32, 2)" in message  # shape mismatch
    assert "net.blocks.1" in message                                                       # missing keys
    with pytest.raises(FileNotFoundError):
        sd.Trainer(model, sde, data, config, resume=str(tmp_path / "missing.pt"))


def test_nan_loss_stops_with_step_and_keeps_last_good_checkpoint(tmp_path):
    torch.manual_seed(0)
    model, sde, data, config = _make("mlp", str(tmp_path), 10)
    config.checkpoint_every = 2
    wrapped = NaNAtStep(model, k=5)
    trainer = sd.Trainer(wrapped, sde, data, config)
    with pytest.raises(NonFiniteLossError, match="at step 5") as info:
        trainer.train()
    assert info.value.step == 5 and "step 4" in str(info.value)
    payload = load_checkpoint(str(tmp_path / "checkpoint.pt"))
    assert payload["step"] == 4
    for key, value in payload["model"].items():
        assert bool(torch.isfinite(value).all()), key
        assert torch.equal(value, trainer.model.state_dict()[key]), key   # no update was applied at step 5


# -- the trainer minimises DSM and uses the EMA weights ------------------------------------------------------
def test_trainer_learns_gaussian_mean_and_samples_it(tmp_path):
    # Data N(μ, c² I) with c = 0.5; the model family contains the exact score, so DSM is minimised at m = μ.
    # Adam at lr 0.02 jitters m by O(lr) around μ; the EMA (decay 0.95, ~20 steps) averages that down, and
    # the tolerance 0.05 is 2.5 lr. The default sampler (DPM-Solver++) then draws from N(μ, c² I) exactly up
    # to its discretisation, so the sample mean is within 4 c/√n (+ the tolerance on m) of μ.
    sde = sd.VPSDE()
    mu = torch.tensor([1.0, -0.5])
    gen = torch.Generator().manual_seed(0)
    x = mu + 0.5 * torch.randn(4096, 2, generator=gen)
    model = GaussianScore(sde, 2, 0.5)
    config = _quiet(steps=300, batch_size=256, lr=0.02, ema_decay=0.95, num_samples=1000, out_dir=str(tmp_path),
                    log_every=50)
    trainer = sd.Trainer(model, sde, x, config)
    history = trainer.train()
    losses = [r["loss"] for r in history if "loss" in r]
    assert losses[-1] < losses[0]
    torch.testing.assert_close(trainer.ema.shadow["m"], x.mean(0), rtol=0, atol=0.05)
    samples = trainer.sample()
    assert samples.shape == (1000, 2)
    assert float((samples.mean(0) - mu).abs().max()) < 4 * 0.5 / math.sqrt(1000) + 0.05
    png = trainer.save_samples()
    with open(png, "rb") as f:
        assert f.read(8) == b"\x89PNG\r\n\x1a\n"


def test_default_evaluation_matches_oracle_entropy():
    # With the oracle's exact score, −E log p_eps(x) over held-out points equals the mixture's cross-entropy
    # (eps = 1e-5 changes the density by O(σ(eps)²) ≈ 1e-5 relative) up to the ODE tolerance (1e-5) and the
    # Monte Carlo error of the mean over 64 points: we allow 4 standard errors.
    sde = sd.VPSDE()
    mixture = sd.eight_gaussians()
    test = sd.data.load("eight_gaussians", split="test", n=64, dtype=torch.float64)
    model = MixtureScore(mixture, sde).double()
    trainer = sd.Trainer(model, sde, test, _quiet(steps=1, num_eval=64), eval_data=test)
    metrics = trainer.evaluate()
    exact = float(-mixture.log_prob(test.x).mean())
    assert abs(metrics["nll"] - exact) < 1e-3
    entropy, _ = mixture.entropy_mc(100_000, torch.Generator().manual_seed(1))
    assert abs(metrics["nll"] - entropy) < 4 * metrics["nll_stderr"] + 0.01


def test_quantized_eval_reports_bits_per_dim():
    # Quantized data (K = 17 levels over [-1, 1], d = 4) scored by the exact score of N(0, c² I) with c = 0.5:
    # log p_eps is Gaussian in closed form, so the evaluated NLL must match the closed-form mean NLL of the
    # dequantized points up to the dequantization noise (4 standard errors of the per-point NLL; the trainer
    # draws its own noise), and bpd = nll/(d ln 2) + log2(1/Δ) with Δ = 2/17 (scoresde.data's convention).
    sde = sd.VPSDE()
    gen = torch.Generator().manual_seed(0)
    values = (8 + 2 * torch.randn(128, 4, generator=gen)).round().clamp(0, 16)
    x = -1 + values * (2 / 16)
    data = sd.data.Dataset(x.double(), levels=17, data_range=(-1.0, 1.0), dequantize=True)
    model = GaussianScore(sde, 4, 0.5).double()
    config = _quiet(steps=1, num_eval=128, eval_rtol=1e-4, eval_atol=1e-4)
    metrics = sd.Trainer(model, sde, data, config, eval_data=data).evaluate()
    eps = torch.tensor([config.eps], dtype=torch.float64)
    var = sde.scale(eps) ** 2 * 0.25 + sde.std(eps) ** 2
    x_deq = data.dequantized(torch.Generator().manual_seed(1))
    nll = 0.5 * (x_deq**2).sum(1) / var + 2 * torch.log(2 * math.pi * var)
    assert abs(metrics["nll"] - float(nll.mean())) < 4 * float(nll.std()) / math.sqrt(128)
    assert metrics["bpd"] == pytest.approx(metrics["nll"] / (4 * math.log(2)) + math.log2(17 / 2), rel=1e-12)


def test_sample_figures(tmp_path):
    gen = torch.Generator().manual_seed(0)
    for shape in [(50, 2), (10, 1, 8, 8), (4, 3, 5, 5)]:
        path = sd.plot.save_samples(torch.randn(shape, generator=gen), str(tmp_path / "f.png"))
        with open(path, "rb") as f:
            assert f.read(8) == b"\x89PNG\r\n\x1a\n"
    with pytest.raises(ValueError, match="shape"):
        sd.plot.save_samples(torch.randn(5, 3), str(tmp_path / "g.png"))


# -- class-conditional training ----------------------------------------------------------------------------------
def test_label_dropout_rate_and_kept_labels():
    """Each label becomes ∅ with probability p independently: over 100,000 labels the fraction is within 5
    binomial standard errors of p, and the others are unchanged."""
    from scoresde.guidance import drop_labels

    cond = torch.arange(100_000) % 7
    dropped = drop_labels(cond, 0.1, 7, generator=torch.Generator().manual_seed(0))
    null = dropped == 7
    assert abs(float(null.double().mean()) - 0.1) < 5 * math.sqrt(0.1 * 0.9 / 100_000)
    assert torch.equal(dropped[~null], cond[~null])
    with pytest.raises(ValueError, match=r"in \[0, 1\]"):
        drop_labels(cond, 1.5, 7)


class RecordingConditional(nn.Module):
    """A conditional model recording the labels the loss gave it (the exact class score, one dummy parameter)."""

    num_classes = 4

    def __init__(self, sde):
        super().__init__()
        self.score, self.seen = sd.eight_gaussians(num_classes=4).conditional_score(sde), []
        self.unused = nn.Parameter(torch.zeros(()))

    def forward(self, x, t, cond=None):
        self.seen.append(cond.clone())
        return self.score(x.double(), t.double(), cond).to(x.dtype) + 0 * self.unused


def test_trainer_feeds_labels_with_dropout():
    sde = sd.VPSDE()
    model = RecordingConditional(sde)
    data = sd.data.load("eight_gaussians", n=512, num_classes=4)
    trainer = sd.Trainer(model, sde, data, _quiet(steps=20, batch_size=256, cond_dropout=0.25))
    assert trainer.cond_dropout == 0.25 and trainer.batches.labels
    trainer.train()
    seen = torch.cat(model.seen)
    null = seen == 4
    assert abs(float(null.double().mean()) - 0.25) < 5 * math.sqrt(0.25 * 0.75 / len(seen))
    assert sd.Trainer(RecordingConditional(sde), sde, data, _quiet(steps=1)).cond_dropout == 0.1   # the default
    x0, cond = next(data.batches(8, seed=1))
    model.seen.clear()
    sd.Trainer(model, sde, data, _quiet(steps=1, cond_dropout=0.0)).step((x0, cond))
    assert torch.equal(model.seen[-1], cond)                                   # no dropout: the batch's labels


def test_conditional_training_errors_name_what_is_wrong():
    sde = sd.VPSDE()
    conditional = sd.ScoreModel(sd.nets.MLP(2, hidden=8, depth=1, num_classes=3), sde)
    with pytest.raises(ValueError, match="has no labels"):
        sd.Trainer(conditional, sde, sd.data.load("checkerboard", n=64), _quiet(steps=1))
    with pytest.raises(ValueError, match="8 classes but the model was built with num_classes=3"):
        sd.Trainer(conditional, sde, sd.data.load("eight_gaussians", n=64), _quiet(steps=1))
    with pytest.raises(ValueError, match="needs a conditional model"):
        sd.Trainer(sd.ScoreModel(sd.nets.MLP(2, hidden=8), sde), sde, sd.data.load("moons", n=64),
                   _quiet(steps=1, cond_dropout=0.2))
    with pytest.raises(ValueError, match="cond_dropout must be a probability"):
        sd.TrainConfig(cond_dropout=1.5)
    trainer = sd.Trainer(conditional, sde, sd.data.load("moons", n=64), _quiet(steps=1))
    with pytest.raises(ValueError, match=r"pass the batch as \(x0, cond\)"):
        trainer.step(torch.zeros(8, 2))


@pytest.mark.slow
def test_a_classifier_trains_with_the_same_trainer():
    """classifier_loss through the Trainer: on the evaluation's noised held-out points (one t ~ U(eps, T) each)
    the trained classifier comes within 5 points of accuracy and 0.1 nats of the exact noisy classifier on the
    same points, the ceiling (at large t the classes overlap: it scores 45 %; measured after 400 steps: 43 %,
    0.008 nats more); sampling from a classifier is refused."""
    from scoresde.losses import noised_class_log_probs

    sde = sd.VPSDE()
    torch.manual_seed(0)
    classifier = sd.nets.Classifier(2, 4, hidden=32, depth=2)
    data = sd.data.load("eight_gaussians", n=4096, num_classes=4)
    test = sd.data.load("eight_gaussians", split="test", n=1024, num_classes=4)
    config = _quiet(steps=400, batch_size=256, num_eval=1024)
    trainer = sd.Trainer(classifier, sde, data, config, loss_fn=sd.classifier_loss, eval_data=test)
    trainer.train()
    metrics = trainer.evaluate()
    generator = torch.Generator().manual_seed(config.seed + 104729)          # the evaluation's draws
    log_probs, labels = noised_class_log_probs(sde, test.oracle.classifier(sde), test.x.double(), test.labels,
                                               generator=generator)
    exact_accuracy = float((log_probs.argmax(1) == labels).double().mean())
    exact_nll = float(-log_probs.gather(1, labels[:, None]).mean())
    assert metrics["accuracy"] > exact_accuracy - 0.05 and metrics["class_nll"] < exact_nll + 0.1, metrics
    with pytest.raises(ValueError, match="needs a score model"):
        trainer.sample(4)


@pytest.mark.slow
def test_a_trained_conditional_model_matches_each_class():
    """A conditional MLP trained on labelled eight_gaussians (1500 steps, batch 256, label dropout 0.1):

    - per-class held-out −log p(x | c) from the PF-ODE with the conditional score, minus the exact −log p(x | c)
      of the same points: the mean gap estimates KL(p(·|c) ‖ p_θ(·|c)) ≥ 0, so it must be > −4 standard errors;
      the quality asked of the model is a gap below 0.2 nats pooled over the classes (measured: about 0.1 nats
      after 1000 steps, 0.07 after 2500);
    - the exact classifier (t = 1e-5) puts ≥ 98 % of the w = 0 samples of every class in that class;
    - the null label gives the unconditional model, trained on 10 % of the labels only: its held-out NLL minus
      the mixture's is again a KL estimate, > −4 standard errors (measured gap: 1.4 nats at 1500 steps, the
      price of the dropout rate; classifier-free guidance leans on this part).
    """
    torch.manual_seed(0)
    sde = sd.VPSDE()
    train = sd.data.load("eight_gaussians", n=20_000)
    test = sd.data.load("eight_gaussians", split="test", n=1024, dtype=torch.float64)
    gmm = train.oracle
    model = sd.ScoreModel(sd.nets.MLP(2, num_classes=8), sde)
    trainer = sd.Trainer(model, sde, train, _quiet(steps=1500, batch_size=256, checkpoint_every=0))
    trainer.train()
    model.double().eval()
    gaps = []
    with trainer.ema.average_parameters():
        for c in range(8):
            x = test.x[test.labels == c][:32]
            res = sd.log_likelihood(sde, sd.conditional_score(model, c), x, divergence="exact", rtol=1e-5, atol=1e-5)
            gap = -res.log_prob - (-gmm.conditional(c).log_prob(x))
            assert float(gap.mean()) > -4 * float(gap.std()) / math.sqrt(len(gap)), (c, gap.mean())
            gaps.append(gap)
            x_c = sd.DPMSolver(25, order=2).sample(sde, sd.conditional_score(model, c), (500, 2), dtype=torch.float64,
                                                   generator=torch.Generator().manual_seed(c)).x
            predicted = gmm.classifier(sde)(x_c, torch.full((500,), 1e-5, dtype=torch.float64)).argmax(1)
            assert float((predicted == c).double().mean()) >= 0.98, c
        pooled = torch.cat(gaps)
        assert float(pooled.mean()) < 0.2, [float(g.mean()) for g in gaps]
        x = test.x[:128]
        res = sd.log_likelihood(sde, sd.conditional_score(model, 8), x, divergence="exact", rtol=1e-5, atol=1e-5)
        gap = -res.log_prob + gmm.log_prob(x)
        assert float(gap.mean()) > -4 * float(gap.std()) / math.sqrt(len(gap))


def test_conditional_evaluation_takes_float64_eval_data():
    """The per-label evaluation casts held-out points to the model's dtype, like the unconditional one."""
    sde = sd.VPSDE()
    model = sd.ScoreModel(sd.nets.MLP(2, hidden=8, depth=1, num_classes=8), sde)
    data = sd.data.load("eight_gaussians", n=64)
    test = sd.data.load("eight_gaussians", split="test", n=16, dtype=torch.float64)
    metrics = sd.Trainer(model, sde, data, _quiet(steps=1, num_eval=16, eval_rtol=1e-3, eval_atol=1e-3),
                         eval_data=test).evaluate()
    assert math.isfinite(metrics["nll"])


# -- learning-rate schedules and gradient accumulation --------------------------------------------------------
def test_learning_rate_schedules_after_the_warm_up():
    from scoresde.training.trainer import warmup_schedule

    cosine = warmup_schedule(1.0, 10, "cosine", 110)
    assert cosine(0) == pytest.approx(0.1) and cosine(8) == pytest.approx(0.9)
    assert cosine(9) == pytest.approx(1.0) and cosine(59) == pytest.approx(0.5) and cosine(109) == pytest.approx(0.0)
    inverse = warmup_schedule(2.0, 4, "inverse_sqrt")
    assert inverse(3) == pytest.approx(2.0) and inverse(15) == pytest.approx(2.0 * math.sqrt(4 / 16))
    assert warmup_schedule(1.0, 0, "constant")(1000) == 1.0
    with pytest.raises(ValueError, match="valid choices: 'constant', 'cosine', 'inverse_sqrt'"):
        _quiet(lr_decay="linear")
    trainer = sd.Trainer(sd.ScoreModel(sd.nets.MLP(2, hidden=8, depth=1), sd.VPSDE()), sd.VPSDE(),
                         sd.data.load("eight_gaussians", n=64), _quiet(steps=20, warmup_steps=5, lr_decay="cosine"))
    assert trainer.learning_rate(19) == pytest.approx(0.0, abs=1e-12)


@pytest.mark.parametrize("importance_sampling", [False, True])
def test_accumulated_micro_batches_give_the_same_step(importance_sampling):
    """One step on a batch of 32 in 4 micro-batches of 8 equals one step on the whole batch (the same times and
    noise, gradients summed), to float64 rounding: parameters, EMA and the reported loss."""
    data = sd.data.load("eight_gaussians", n=64)
    results = []
    for accumulate in (1, 4):
        torch.manual_seed(0)
        sde = sd.VPSDE()
        model = sd.ScoreModel(sd.nets.MLP(2, hidden=16, depth=1), sde).double()
        config = _quiet(steps=2, batch_size=32, accumulate=accumulate,
                        time_distribution="importance" if importance_sampling else "uniform",
                        weighting="likelihood" if importance_sampling else "sigma2", ema_decay=0.5)
        trainer = sd.Trainer(model, sde, data, config)
        history = trainer.train()
        results.append((dict(model.state_dict()), history[-1]["loss"] if history else None, trainer.ema.shadow))
    (a, loss_a, ema_a), (b, loss_b, ema_b) = results
    for key in a:
        torch.testing.assert_close(b[key], a[key], rtol=1e-12, atol=1e-12)
    for key in ema_a:
        torch.testing.assert_close(ema_b[key], ema_a[key], rtol=1e-12, atol=1e-12)
    if loss_a is not None:
        assert loss_b == pytest.approx(loss_a, rel=1e-12)
    with pytest.raises(ValueError, match="must divide batch_size"):
        _quiet(batch_size=30, accumulate=4)


# -- precision and compile ----------------------------------------------------------------------------------
@pytest.mark.slow
def test_bf16_loss_matches_fp32_within_its_precision_and_training_converges():
    """bfloat16 keeps 8 bits of mantissa (relative rounding u = 2⁻⁸ = 0.4 %): the autocast loss of one batch is within
    10 % of the float32 one (a first-order worst case: the inputs and weights of each of the 3 layers rounded, about
    6u = 2.3 % on the output, doubled by the square of the residual: 5 %), and 300 bf16 steps on a Gaussian fit
    its mean as well as float32 does (within 0.1 of the 0.05 distance float32 reaches)."""
    sde = sd.VPSDE()
    x0 = torch.randn(512, 2, generator=torch.Generator().manual_seed(0)) * 0.5 + torch.tensor([1.0, -1.0])
    losses, means = {}, {}
    for precision in ("fp32", "bf16"):
        torch.manual_seed(0)
        model = sd.ScoreModel(sd.nets.MLP(2, hidden=32, depth=2), sde)
        trainer = sd.Trainer(model, sde, x0, _quiet(steps=300, batch_size=128, precision=precision, log_every=300,
                                                   weighting="sigma2", time_distribution="uniform"))
        losses[precision] = float(trainer.loss(x0).detach())
        trainer.train()
        means[precision] = trainer.sample(512, seed=1).mean(0)
    assert losses["bf16"] == pytest.approx(losses["fp32"], rel=0.1)
    target = torch.tensor([1.0, -1.0])
    assert float((means["bf16"] - target).norm()) < float((means["fp32"] - target).norm()) + 0.1
    with pytest.raises(ValueError, match="valid choices: 'fp32', 'bf16', 'fp16'"):
        _quiet(precision="fp8")
    with pytest.raises(ValueError, match="needs a CUDA device"):
        sd.Trainer(sd.ScoreModel(sd.nets.MLP(2, hidden=8, depth=1), sde), sde, x0, _quiet(precision="fp16"))


@pytest.mark.slow
def test_compile_runs_the_compiled_model_and_falls_back_with_a_warning(monkeypatch):
    """compile=True trains through torch.compile's module (here the "eager" backend, so the test needs no C++
    compiler: the default inductor is exercised on a GPU machine); a backend that fails at the first call leaves
    a warning and the same training as without compile."""
    sde = sd.VPSDE()
    data = sd.data.load("eight_gaussians", n=64)
    real_compile = torch.compile
    calls = []

    def eager_compile(module, **kwargs):
        calls.append(module)
        return real_compile(module, backend="eager")

    monkeypatch.setattr(torch, "compile", eager_compile)
    torch.manual_seed(0)
    model = sd.ScoreModel(sd.nets.MLP(2, hidden=8, depth=1), sde)
    sd.Trainer(model, sde, data, _quiet(steps=2, batch_size=16, compile=True)).train()
    assert len(calls) == 1

    class Broken(nn.Module):
        def __init__(self, inner):
            super().__init__()
            self.inner = inner

        def forward(self, *args):
            raise RuntimeError("no C++ compiler found")

    monkeypatch.setattr(torch, "compile", lambda module, **kwargs: Broken(module))
    results = []
    for compile_ in (False, True):
        torch.manual_seed(0)
        model = sd.ScoreModel(sd.nets.MLP(2, hidden=8, depth=1), sde)
        trainer = sd.Trainer(model, sde, data, _quiet(steps=2, batch_size=16, compile=compile_))
        if compile_:
            with pytest.warns(RuntimeWarning, match="torch.compile failed .*no C\\+\\+ compiler"):
                trainer.train()
        else:
            trainer.train()
        results.append(dict(model.state_dict()))
    for key in results[0]:
        assert torch.equal(results[0][key], results[1][key]), key


def test_time_distribution_reaches_the_loss():
    seen = {}

    def loss(sde, model, x0, weighting="sigma2", importance_sampling=False, eps=1e-5, generator=None,
             time_distribution=None, importance_weight=True):
        seen.update(time_distribution=time_distribution, importance_weight=importance_weight,
                    importance_sampling=importance_sampling)
        return sd.dsm_loss(sde, model, x0, weighting=weighting, eps=eps, generator=generator,
                           time_distribution=time_distribution, importance_weight=importance_weight)

    sde = sd.VPSDE()
    model = sd.ScoreModel(sd.nets.MLP(2, hidden=8, depth=1), sde)
    config = _quiet(steps=1, batch_size=16, time_distribution="log_normal", importance_weight=False)
    sd.Trainer(model, sde, sd.data.load("eight_gaussians", n=32), config, loss_fn=loss).train()
    assert seen == dict(time_distribution="log_normal", importance_weight=False, importance_sampling=False)
    with pytest.raises(ValueError, match="valid choices: 'uniform', 'importance', 'log_snr', 'log_normal'"):
        _quiet(time_distribution="beta")


def test_power_ema_weighs_updates_by_the_power_function():
    """EDM2's profile: after N updates of a scalar parameter set to 1, 2, …, N, the average is Σ_τ w_τ τ with
    w_τ = (τ^{γ+1} − (τ − 1)^{γ+1})/N^{γ+1} exactly (γ = 0: the running mean)."""
    for gamma in (0.0, 1.0, 6.94):
        model = nn.Linear(1, 1, bias=False)
        ema = sd.EMA(model, power=gamma)
        N = 40
        for tau in range(1, N + 1):
            with torch.no_grad():
                model.weight.fill_(float(tau))
            ema.update()
        tau = torch.arange(1, N + 1, dtype=torch.float64)
        w = (tau ** (gamma + 1) - (tau - 1) ** (gamma + 1)) / N ** (gamma + 1)
        assert float(ema.shadow["weight"]) == pytest.approx(float((w * tau).sum()), rel=1e-5)


def test_half_life_ema_halves_the_weight_of_old_updates():
    """EDM's profile: with B samples per update and a half-life h (after the ramp-up), an update's weight halves
    every h/B updates; during the ramp-up the half-life is rampup · samples seen. In float64, so that 8 updates'
    roundings (a few 2⁻⁵³ each) stay far below the 1e-9 asked of 0.5 (in float32 one rounding is 6e-8)."""
    model = nn.Linear(1, 1, bias=False).double()
    ema = sd.EMA(model, half_life=800, rampup=0.0, batch_size=100)
    assert ema.current_decay() == pytest.approx(0.5 ** (1 / 8))
    ramped = sd.EMA(model, half_life=800, rampup=0.5, batch_size=100)
    assert ramped.current_decay() == pytest.approx(0.5 ** (100 / 50))          # h_0 = 0.5 · 100
    with torch.no_grad():
        model.weight.fill_(1.0)
    ema.update()                                                               # the first update sets the average
    with torch.no_grad():
        model.weight.fill_(0.0)
    ema2 = sd.EMA(model, half_life=800, rampup=0.0, batch_size=100)
    ema2.shadow["weight"].fill_(1.0)
    for _ in range(8):
        ema2.update()
    assert float(ema2.shadow["weight"]) == pytest.approx(0.5, rel=1e-9)
    with pytest.raises(ValueError, match="not both"):
        _quiet(ema_half_life=1000.0, ema_power=6.94)


@pytest.mark.parametrize("profile", [dict(ema_power=6.94), dict(ema_half_life=500.0)])
def test_resume_is_exact_with_each_ema_profile(profile, tmp_path):
    torch.manual_seed(0)
    data = sd.data.load("eight_gaussians", n=128)
    sde = sd.VPSDE()

    def make(out):
        torch.manual_seed(0)
        return sd.ScoreModel(sd.nets.MLP(2, hidden=8, depth=1), sde), _quiet(steps=4, batch_size=16, out_dir=out,
                                                                              **profile)

    model_a, config = make(str(tmp_path / "a"))
    full = sd.Trainer(model_a, sde, data, config)
    full.train()
    model_b, config = make(str(tmp_path / "b"))
    first = sd.Trainer(model_b, sde, data, config)
    first.train(num_steps=2)
    first.save_checkpoint()
    model_c, config = make(str(tmp_path / "b"))
    second = sd.Trainer(model_c, sde, data, config, resume=True)
    second.train()
    for key, value in full.ema.shadow.items():
        assert torch.equal(value, second.ema.shadow[key]), key


# -- EDM2's post-hoc EMA ---------------------------------------------------------------------------------------
def _power_emas_on_trajectory(trajectory, powers, every=None):
    """Run power EMAs of a (1, D) float64 "parameter" set directly to trajectory[τ − 1] at update τ = 1 … N (no
    training); returns the EMAs and (with ``every``) their state dicts every ``every`` updates."""
    model = nn.Linear(trajectory.shape[1], 1, bias=False).double()
    emas = [sd.EMA(model, power=gamma) for gamma in powers]
    snapshots = []
    for tau in range(1, trajectory.shape[0] + 1):
        with torch.no_grad():
            model.weight.copy_(trajectory[tau - 1][None])
        for ema in emas:
            ema.update()
        if every and tau % every == 0:
            snapshots += [ema.state_dict() for ema in emas]
    return emas, snapshots


def test_post_hoc_ema_reconstructs_a_power_profile_within_its_least_squares_bound():
    """Snapshots of the EMAs γ = 16.97 and 6.94 (EDM2's σ_rel = 0.05, 0.10) every 20 of 400 updates of a random
    walk θ_τ (8 entries). The discrete power EMA is exactly ∫ p(s) θ(⌈s⌉) ds, so the reconstruction's error per
    entry is at most r · (Σ_τ θ_τ²)^{1/2} with r the Gram residual (`post_hoc_ema_weights`), and 0 for a stored
    profile (r = 0: only float64 rounding, measured 4e-14). Measured for γ = 10, between the two: error 1.1e-4,
    bound 2.3e-3 (r = 2.6e-4); γ = 3 (wider than both): 7.3e-4 ≤ 5.2e-3."""
    from scoresde.training import post_hoc_ema_weights, power_from_sigma_rel, sigma_rel_from_power

    n, every, powers = 400, 20, (16.97, 6.94)
    steps = torch.randn(n, 8, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    trajectory = 1.0 + steps.cumsum(0) / math.sqrt(n)
    _, snapshots = _power_emas_on_trajectory(trajectory, powers, every)
    assert len(snapshots) == 2 * n // every
    norm = trajectory.pow(2).sum(0).sqrt()                         # (Σ_τ θ_τ²)^{1/2} per entry
    profiles = [(s["power"], s["num_updates"]) for s in snapshots]
    for gamma in (6.94, 10.0, 3.0):
        (direct,), _ = _power_emas_on_trajectory(trajectory, [gamma])
        error = (sd.post_hoc_ema(snapshots, gamma)["weight"] - direct.shadow["weight"]).abs()[0]
        weights, residual = post_hoc_ema_weights(profiles, gamma, n)
        if gamma in powers:
            assert residual < 1e-6 and float(error.max()) < 1e-10
        else:
            assert bool((error <= residual * norm + 1e-12).all()) and float(error.max()) < 2e-3
    # An earlier target step (t_r = 300) also fits within its bound.
    (direct,), _ = _power_emas_on_trajectory(trajectory[:300], [10.0])
    weights, residual = post_hoc_ema_weights(profiles, 10.0, 300)
    error = (sd.post_hoc_ema(snapshots, 10.0, step=300)["weight"] - direct.shadow["weight"]).abs()[0]
    assert bool((error <= residual * norm + 1e-12).all())
    # σ_rel ↔ γ: EDM2's pairs (0.05 ↔ 16.97, 0.10 ↔ 6.94), the uniform profile (γ = 0: 1/√12), and round trips.
    assert power_from_sigma_rel(0.05) == pytest.approx(16.97, abs=0.01)
    assert power_from_sigma_rel(0.10) == pytest.approx(6.94, abs=0.01)
    assert sigma_rel_from_power(0.0) == pytest.approx(1 / math.sqrt(12), rel=1e-15)
    for gamma in (-0.3, 0.0, 1.0, 16.97, 100.0):
        assert power_from_sigma_rel(sigma_rel_from_power(gamma)) == pytest.approx(gamma, rel=1e-9, abs=1e-12)
    by_sigma = sd.post_hoc_ema(snapshots, sigma_rel=sigma_rel_from_power(10.0))
    torch.testing.assert_close(by_sigma["weight"], sd.post_hoc_ema(snapshots, 10.0)["weight"], rtol=1e-9, atol=1e-12)
    model = nn.Linear(8, 1, bias=False).double()
    sd.post_hoc_ema(snapshots, 6.94, model=model)
    torch.testing.assert_close(model.weight.detach(), snapshots[-1]["shadow"]["weight"], rtol=0, atol=1e-10)


def test_post_hoc_ema_errors_name_what_is_wrong(tmp_path):
    trajectory = torch.ones(4, 2, dtype=torch.float64)
    emas, snapshots = _power_emas_on_trajectory(trajectory, (6.94,), every=2)
    with pytest.raises(ValueError, match="no EMA snapshots"):
        sd.post_hoc_ema([], 6.94)
    with pytest.raises(ValueError, match="no EMA snapshots"):
        sd.post_hoc_ema(str(tmp_path), 6.94)                       # an empty folder
    for gamma in (-1.0, -2.0, -0.6):
        with pytest.raises(ValueError, match="must be a number > −1/2"):
            sd.post_hoc_ema(snapshots, gamma)
    with pytest.raises(ValueError, match="exactly one"):
        sd.post_hoc_ema(snapshots, 6.94, sigma_rel=0.1)
    with pytest.raises(ValueError, match="sigma_rel must be in"):
        sd.post_hoc_ema(snapshots, sigma_rel=0.5)
    with pytest.raises(ValueError, match="after the latest snapshot"):
        sd.post_hoc_ema(snapshots, 6.94, step=5)
    other = sd.EMA(nn.Linear(3, 1, bias=False).double(), power=6.94)
    other.update()
    with pytest.raises(ValueError, match="missing keys.*weight|shape mismatches: weight"):
        sd.post_hoc_ema(snapshots + [other], 6.94)
    renamed = dict(snapshots[0], shadow={"kernel": snapshots[0]["shadow"]["weight"]})
    with pytest.raises(ValueError, match="unexpected keys .*kernel"):
        sd.post_hoc_ema(snapshots + [renamed], 6.94)
    plain = sd.EMA(nn.Linear(2, 1, bias=False).double(), decay=0.9)
    plain.update()
    with pytest.raises(ValueError, match="not a power EMA"):
        sd.post_hoc_ema(snapshots + [plain], 6.94)
    torch.save({"format": "x"}, str(tmp_path / "ema_0000001.pt"))
    with pytest.raises(ValueError, match="not a scoresde EMA snapshot"):
        sd.post_hoc_ema(str(tmp_path), 6.94)
    with pytest.raises(ValueError, match="ema_snapshot_every needs power EMAs"):
        _quiet(ema_snapshot_every=10)
    with pytest.raises(ValueError, match="distinct numbers > -1/2"):
        _quiet(ema_snapshot_every=10, ema_snapshot_powers=[6.94, -0.7])
    with pytest.raises(ValueError, match="needs ema_snapshot_every"):
        _quiet(ema_snapshot_powers=[6.94])


def test_ema_snapshots_survive_resume(tmp_path):
    """Snapshots every 2 steps of two profiles (one the trainer's EMA, one tracked beside it): a run stopped at
    step 3, with a later snapshot (step 4) left by the stopped run after its checkpoint, then resumed to step 8
    writes the same files, bit for bit in their tensors, as an uninterrupted run; the folder of snapshots gives a
    post-hoc EMA equal to the trainer's own for the stored γ."""
    from scoresde.training import load_ema_snapshots

    data = sd.data.load("eight_gaussians", n=128)
    sde = sd.VPSDE()

    def make(out):
        torch.manual_seed(0)
        return sd.ScoreModel(sd.nets.MLP(2, hidden=8, depth=1), sde), _quiet(
            steps=8, batch_size=16, out_dir=out, ema_power=6.94, ema_snapshot_every=2,
            ema_snapshot_powers=[16.97, 6.94], checkpoint_every=3)

    model_a, config = make(str(tmp_path / "a"))
    full = sd.Trainer(model_a, sde, data, config)
    full.train()
    model_b, config = make(str(tmp_path / "b"))
    first = sd.Trainer(model_b, sde, data, config)
    first.train(num_steps=3)                                       # checkpoint at 3 (end of the call)
    kept = (tmp_path / "b" / "checkpoint.pt").read_bytes()
    first.train(num_steps=1)                                       # writes snapshot 4, then "dies" ...
    (tmp_path / "b" / "checkpoint.pt").write_bytes(kept)           # ... before its checkpoint of step 4
    model_c, config = make(str(tmp_path / "b"))
    second = sd.Trainer(model_c, sde, data, config, resume=True)
    assert second.global_step == 3 and sorted(os.listdir(tmp_path / "b" / "ema_snapshots")) == ["ema_0000002.pt"]
    second.train()
    names = sorted(os.listdir(tmp_path / "a" / "ema_snapshots"))
    assert names == [f"ema_{s:07d}.pt" for s in (2, 4, 6, 8)] == sorted(os.listdir(tmp_path / "b" / "ema_snapshots"))
    for name in names:
        a, b = (torch.load(str(tmp_path / run / "ema_snapshots" / name), weights_only=True) for run in "ab")
        assert a["step"] == b["step"] == int(name[4:11])
        assert [e["power"] for e in a["emas"]] == [e["power"] for e in b["emas"]] == [16.97, 6.94]
        for ea, eb in zip(a["emas"], b["emas"]):
            assert ea["num_updates"] == eb["num_updates"] == a["step"]
            for key, value in ea["shadow"].items():
                assert torch.equal(value, eb["shadow"][key]), (name, key)
    assert len(load_ema_snapshots(str(tmp_path / "b"))) == 8
    rebuilt = sd.post_hoc_ema(str(tmp_path / "b"), 6.94)
    for key, value in second.ema.shadow.items():
        torch.testing.assert_close(rebuilt[key], value, rtol=0, atol=1e-5)
    with pytest.raises(ValueError, match="needs an out_dir"):
        sd.Trainer(model_a, sde, data, _quiet(ema_power=6.94, ema_snapshot_every=2))


def test_ema_snapshots_from_the_command_line(tmp_path):
    """The config fields reach the CLI and config.yaml like any other: --ema_snapshot_every and a YAML list."""
    from scoresde.app.cli import main

    out = str(tmp_path / "run")
    assert main(["train", "--out", out, "--steps=4", "--batch_size=16", "--data.n=64", "--progress=false",
                 "--model.hidden=8", "--model.depth=1", "--device=cpu", "--ema_snapshot_every=2",
                 "--ema_snapshot_powers=[16.97,6.94]"]) == 0
    assert sorted(os.listdir(os.path.join(out, "ema_snapshots"))) == ["ema_0000002.pt", "ema_0000004.pt"]
    state = sd.post_hoc_ema(out, sigma_rel=0.08)
    assert all(bool(torch.isfinite(v).all()) for v in state.values() if v.is_floating_point())
