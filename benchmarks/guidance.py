"""Classifier-free guidance: what the guidance weight w buys (class precision) and costs (diversity, mode coverage).

    .venv/bin/python benchmarks/guidance.py [--part {2d,digits,all}] [--cpu-seconds 600] [--seed 0] [--quick]

Every guided score is ``sd.classifier_free_guidance(model, c, scale=w)`` = (1 + w) s(x, t, c) − w s(x, t, ∅),
sampled with one fixed sampler (DPM-Solver++ 2M, ``--steps`` steps, Tweedie denoising at the end, which adds one
evaluation). For every w all classes start from the same prior draws (one generator seeded per class), so the
rows of a table differ only by w. Guided models use their EMA weights.

**Part 1, 2-D (exact oracle).** Eight Gaussians (radius 2, std 0.1) with 4 classes: class c is the pair of
opposite components c and c + 4. A conditional ``ScoreModel(MLP(2, num_classes=4))`` (ε-parameterization, VP
SDE) is trained with the library's Trainer (label dropout 0.1, batch 512, lr 2e-3 with 100 warm-up steps and
×0.1 over the last 20 % of the steps, likelihood weighting with importance sampling, EMA 0.999). For each w
and each class c, n samples are drawn; per class, then averaged over the 4 classes:

- precision: the fraction of samples x whose exact-classifier class argmax_c' p_t(c' | x) at t = 1e-5
  (``gmm.classifier(sde)``) is c;
- on-mode: the fraction of samples within 3 component standard deviations (0.3) of one of the class's two
  means (for exact draws 1 − e^{−4.5} = 0.989): precision in the sense of "on the data", which the class
  precision above does not test (a point between two modes still has a most likely class);
- log p(x | c): the mean exact conditional log-density ``gmm.conditional(c).log_prob(x)`` of the samples. A
  perfect sampler gives −H(x | c), estimated from 10⁵ oracle draws per class and printed as the "truth" row;
  guidance that sharpens the modes pushes it above that value (less diversity), samples off the class's modes
  pull it far below;
- coverage: each sample is assigned to one of the 8 components by its exact component posterior at t = 1e-5
  (the argmax; equal weights and stds, so the nearest mean); coverage is min(share on component c, share on
  component c + 4) / 0.5, the shares taken over all of the class's samples: 1 means both modes get their true
  half, 0 means one mode is lost. "worst coverage" is the smallest over the 4 classes;
- NFE (calls of the score function), network evaluations (2 per guided call: one doubled batch) and the wall
  time of sampling all classes.

Reference rows: the exact conditional score of the oracle (``sd.conditional_score(gmm.conditional_score(sde),
c)``: what a perfect model gives at w = 0), the oracle under CFG at every w (the effect of guidance itself,
without model error), and classifier guidance on the trained model's unconditional part (cond = ∅) with the
exact noisy classifier at γ = 1 and 2 (γ = 1 would be the exact conditional law with an exact unconditional
score).

**Part 2, digits.** scikit-learn's 8×8 digits (uniformly dequantized, [−1, 1]). A conditional U-Net
(``UNet(num_classes=10)``) is trained with label dropout 0.1 for ``--cpu-seconds`` of process CPU time (all
threads counted; ``--digits-steps`` fixes the step count instead). A real-data classifier, scikit-learn's
multinomial LogisticRegression on the flattened pixels of the training split, is scored on the test split.
For each w, ``--per-class`` images per digit are sampled, clipped to [−1, 1], and classified:

- accuracy: the fraction of samples that the real-data classifier assigns to the requested digit (overall, and
  for the worst digit);
- pairwise distance: the mean L2 distance between two samples of the same digit, averaged over digits, next to
  the same for the real training images (a crude diversity measure: guidance lowers it);
- NFE, network evaluations and wall time of sampling all 500 images.

Figures per w under benchmarks/results/: guidance_digits_seed<seed>_w<w>.png (10 samples per digit, one row
per digit) and guidance_2d_seed<seed>_w<w>.png (2-D samples over the exact conditional score's).
"""
from __future__ import annotations

import argparse
import math
import os
import platform
import time

import torch

import scoresde as sd

RESULTS = os.path.join(os.path.dirname(os.path.abspath(__file__)), "results")
WEIGHTS = (0.0, 0.5, 1.0, 2.0, 4.0)


# -- shared helpers ------------------------------------------------------------------------------------------
def step_decay_schedule(lr: float, warmup: int, decay_at: float):
    """Linear warm-up, then lr, then lr/10 from step ``decay_at`` on (``decay_at`` may be changed later through
    the returned ``state`` dict, e.g. when a CPU-time budget is nearly spent)."""
    state = {"decay_at": decay_at}

    def schedule(step: int) -> float:
        base = lr * min(1.0, (step + 1) / warmup) if warmup > 0 else lr
        return base * (0.1 if step >= state["decay_at"] else 1.0)

    return schedule, state


def sample_classes(sde, score_for_class, num_classes: int, n: int, shape, sampler, seed: int):
    """Sample n points of every class with ``score_for_class(c)``; the generator of class c is seeded by
    seed + c (the same for every guidance weight). Returns (list of (n, *shape) tensors, NFE per class,
    network evaluations in all, wall seconds)."""
    xs, nfe, evals = [], None, 0
    start = time.perf_counter()
    with torch.no_grad():
        for c in range(num_classes):
            g = torch.Generator().manual_seed(seed + c)
            res = sampler.sample(sde, score_for_class(c), (n,) + tuple(shape), generator=g)
            xs.append(res.x)
            nfe = res.nfe
            evals += res.network_evaluations
    return xs, nfe, evals, time.perf_counter() - start


def training_line(trainer) -> str:
    return f"{trainer.global_step} steps, last logged loss {trainer.history[-1]['loss']:.3f}"


# -- part 1: eight Gaussians, four classes -------------------------------------------------------------------
def metrics_2d(gmm, components, sde, xs):
    """Per-class precision, on-mode share, mean log p(x | c), coverage (see the module docstring), each a list
    over classes."""
    t = torch.tensor(1e-5, dtype=torch.float64)
    precision, on_mode, log_density, coverage = [], [], [], []
    for c, x in enumerate(xs):
        x = x.double()
        predicted = gmm.classifier(sde)(x, t.expand(len(x))).argmax(1)
        precision.append(float((predicted == c).double().mean()))
        mine = gmm.labels == c
        z = (x[:, None, :] - gmm.means[mine][None]) / gmm.stds[mine][None]     # (n, 2, 2) standardized offsets
        on_mode.append(float((z.norm(dim=2).min(1).values < 3).double().mean()))
        log_density.append(float(gmm.conditional(c).log_prob(x).mean()))
        component = components.classifier(sde)(x, t.expand(len(x))).argmax(1)
        mine = (gmm.labels == c).nonzero().flatten().tolist()          # the class's two components
        shares = [float((component == k).double().mean()) for k in mine]
        coverage.append(min(shares) / (1.0 / len(mine)))
    return precision, on_mode, log_density, coverage


def row_2d(label, w, gmm, components, sde, xs, nfe, evals, wall):
    precision, on_mode, log_density, coverage = metrics_2d(gmm, components, sde, xs)
    mean = lambda v: sum(v) / len(v)
    return (f"| {label} | {w} | {mean(precision):.4f} | {min(precision):.4f} | {mean(on_mode):.4f} | "
            f"{mean(log_density):.3f} | "
            f"{mean(coverage):.3f} | {min(coverage):.3f} | {nfe} | {evals} | {wall:.2f} |")


def part_2d(args):
    seed = args.seed
    torch.manual_seed(seed)
    K = 4
    data = sd.data.load("eight_gaussians", num_classes=K, seed=seed)
    gmm = data.oracle
    components = sd.GaussianMixture(gmm.means, gmm.stds, gmm.weights, labels=torch.arange(len(gmm.means)))
    sde = sd.VPSDE()
    model = sd.ScoreModel(sd.nets.MLP(2, hidden=128, depth=3, num_classes=K), sde, parameterization="eps")
    steps = args.steps_2d
    schedule, _ = step_decay_schedule(2e-3, 100, decay_at=int(0.8 * steps))
    config = sd.TrainConfig(steps=steps, batch_size=512, lr=2e-3, warmup_steps=100, ema_decay=0.999,
                            weighting="likelihood", time_distribution="importance", eps=1e-5, cond_dropout=0.1,
                            seed=seed, log_every=100, progress=False)
    trainer = sd.Trainer(model, sde, data, config, lr_schedule=schedule)
    cpu, wall = time.process_time(), time.perf_counter()
    trainer.train()
    cpu, wall = time.process_time() - cpu, time.perf_counter() - wall

    n, sampler = args.n_2d, sd.DPMSolver(steps=args.steps, order=2, denoise=True)
    shape = (2,)
    sample_seed = 10_000 * (seed + 1)
    # the true mean conditional log-density, E_{x ~ p(.|c)} log p(x | c) = −H(x | c), from oracle draws
    g = torch.Generator().manual_seed(seed + 12345)
    truth = []
    for c in range(K):
        lp = gmm.conditional(c).log_prob(gmm.conditional(c).sample(args.n_truth, g))
        truth.append((float(lp.mean()), float(lp.std() / math.sqrt(len(lp)))))
    truth_mean = sum(t for t, _ in truth) / K
    truth_se = math.sqrt(sum(s * s for _, s in truth)) / K

    # i.i.d. draws of each class's law: the metrics of perfect samples
    g = torch.Generator().manual_seed(seed + 54321)
    oracle_xs = [gmm.conditional(c).sample(n, g) for c in range(K)]

    rows_model, rows_oracle, rows_cg, model_xs = [], [], [], {}
    model.eval()
    with trainer.ema.average_parameters():
        for w in WEIGHTS:
            xs, nfe, evals, secs = sample_classes(
                sde, lambda c: sd.classifier_free_guidance(model, c, scale=w), K, n, shape, sampler, sample_seed)
            rows_model.append(row_2d("trained model, CFG", w, gmm, components, sde, xs, nfe, evals, secs))
            model_xs[w] = xs
        if not args.no_classifier_guidance:
            unconditional = sd.conditional_score(model, K)          # the null label ∅
            for gamma in (1.0, 2.0):
                xs, nfe, evals, secs = sample_classes(
                    sde, lambda c: sd.classifier_guidance(unconditional, gmm.classifier(sde), c, scale=gamma),
                    K, n, shape, sampler, sample_seed)
                rows_cg.append(row_2d("trained s(x, t, ∅) + exact classifier", f"γ = {gamma:g}", gmm, components,
                                      sde, xs, nfe, evals, secs))
    exact = gmm.conditional_score(sde)
    for w in WEIGHTS:
        xs, nfe, evals, secs = sample_classes(
            sde, (lambda c: sd.conditional_score(exact, c)) if w == 0 else
            (lambda c: sd.classifier_free_guidance(exact, c, scale=w)), K, n, shape, sampler, sample_seed)
        label = "exact conditional score" if w == 0 else "exact scores, CFG"
        rows_oracle.append(row_2d(label, w, gmm, components, sde, xs, nfe, evals, secs))
        if w == 0:
            exact_xs = xs

    os.makedirs(RESULTS, exist_ok=True)
    reference = torch.cat([x[:500] for x in exact_xs])
    pngs = []
    for w, xs in model_xs.items():
        path = os.path.join(RESULTS, f"{args.prefix}guidance_2d_seed{seed}_w{w:g}.png")
        pngs.append(sd.plot.save_samples(torch.cat([x[:500] for x in xs]), path, reference=reference,
                                         title=f"trained model, CFG w = {w:g}, 4 classes (black: exact conditional "
                                               f"score)"))

    print("## Part 1: eight Gaussians, 4 classes (c = components c and c + 4)\n")
    print(f"Model: ScoreModel(MLP(2, hidden 128, depth 3, num_classes 4)), eps parameterization, VP SDE; "
          f"Trainer {steps} steps (batch 512, lr 2e-3, warm-up 100, ×0.1 from step {int(0.8 * steps)}, "
          f"likelihood weighting + importance sampling, label dropout 0.1, EMA 0.999): {training_line(trainer)}, "
          f"{cpu:.0f} CPU s, {wall:.0f} wall s.")
    print(f"Sampler: DPM-Solver++ 2M, {args.steps} steps + Tweedie denoising (eps 1e-3); {n} samples per class, "
          f"the same prior draws for every row; EMA weights. Truth: {args.n_truth} oracle draws per class.\n")
    print("| score | w | precision | worst-class precision | on-mode (< 3σ) | mean log p(x \\| c) | coverage | "
          "worst coverage | NFE per class | network evals (all classes) | sampling wall s |")
    print("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
    prec, on_mode, logd, cov = metrics_2d(gmm, components, sde, oracle_xs)
    print(f"| truth: i.i.d. draws of p(x \\| c) | – | {sum(prec) / K:.4f} | {min(prec):.4f} | {sum(on_mode) / K:.4f} | "
          f"{truth_mean:.3f} ± {truth_se:.3f} (−H(x \\| c)) | {sum(cov) / K:.3f} | {min(cov):.3f} | – | – | – |")
    for row in rows_oracle[:1] + rows_model + rows_cg + rows_oracle[1:]:
        print(row)
    print(f"\nThe truth row is {n} i.i.d. draws per class (its log-density: {args.n_truth}): even an exactly fair "
          f"sampler has coverage 1 − √(2/(πn)) ≈ {1 - math.sqrt(2 / (math.pi * n)):.3f} on average at n = {n}, "
          f"with a spread of about {0.6 / math.sqrt(n):.3f}. "
          f"Scatters (500 points per class): {', '.join(pngs)}\n")


# -- part 2: digits ------------------------------------------------------------------------------------------
def fit_digit_classifier(train, test, max_iter: int, seed: int):
    """Multinomial logistic regression on the flattened training pixels (bin centres in [−1, 1])."""
    from sklearn.linear_model import LogisticRegression

    clf = LogisticRegression(max_iter=max_iter, C=1.0, random_state=seed)
    clf.fit(train.x.reshape(len(train), -1).double().numpy(), train.labels.numpy())
    return clf


def accuracy_per_class(clf, xs):
    """xs: list over classes of (n, 1, 8, 8) tensors → list of per-class accuracies."""
    out = []
    for c, x in enumerate(xs):
        predicted = clf.predict(x.reshape(len(x), -1).double().numpy())
        out.append(float((torch.as_tensor(predicted) == c).double().mean()))
    return out


def pairwise_distance(xs):
    """Mean L2 distance between two different samples of the same class, averaged over classes."""
    values = []
    for x in xs:
        flat = x.reshape(len(x), -1).double()
        d = torch.cdist(flat, flat)
        m = len(flat)
        values.append(float(d.sum() / (m * (m - 1))))
    return sum(values) / len(values)


def part_digits(args):
    seed = args.seed
    torch.manual_seed(seed)
    K = 10
    train = sd.data.load("digits", dequantize=True)
    test = sd.data.load("digits", split="test", dequantize=True)
    sde = sd.VPSDE()
    net = sd.nets.UNet(in_channels=1, channels=args.channels, channel_mults=(1, 2), attention_resolutions=(4,),
                       dropout=args.dropout, image_size=8, fourier_scale=args.fourier_scale, num_classes=K)
    model = sd.ScoreModel(net, sde, parameterization=args.parameterization, sigma_data=0.8)
    n_params = sum(p.numel() for p in model.parameters())
    schedule, decay = step_decay_schedule(args.lr, 100, decay_at=math.inf)
    config = sd.TrainConfig(steps=10**9, batch_size=args.batch_size, lr=args.lr, warmup_steps=100, grad_clip=1.0,
                            ema_decay=args.ema, weighting="likelihood", time_distribution="importance", eps=1e-5,
                            cond_dropout=0.1, seed=seed, log_every=100, progress=False)
    trainer = sd.Trainer(model, sde, train, config, lr_schedule=schedule)

    start, wall = time.process_time(), time.perf_counter()
    if args.digits_steps:
        decay["decay_at"] = int((1 - args.lr_decay) * args.digits_steps)
        trainer.train(num_steps=args.digits_steps)
    else:
        while time.process_time() - start < args.cpu_seconds:
            trainer.train(num_steps=50)
            if math.isinf(decay["decay_at"]) and time.process_time() - start > (1 - args.lr_decay) * args.cpu_seconds:
                decay["decay_at"] = trainer.global_step
    cpu, wall = time.process_time() - start, time.perf_counter() - wall
    decayed_at = decay["decay_at"]

    t0 = time.perf_counter()
    clf = fit_digit_classifier(train, test, args.max_iter, seed)
    fit_s = time.perf_counter() - t0
    test_by_class = [test.x[test.labels == c] for c in range(K)]
    real_acc = accuracy_per_class(clf, test_by_class)
    real_overall = float(sum(a * len(x) for a, x in zip(real_acc, test_by_class)) / len(test))
    deq = test.dequantized(torch.Generator().manual_seed(seed + 7))
    deq_by_class = [deq[test.labels == c] for c in range(K)]
    deq_acc = accuracy_per_class(clf, deq_by_class)
    deq_overall = float(sum(a * len(x) for a, x in zip(deq_acc, deq_by_class)) / len(test))
    train_by_class = [train.x[train.labels == c] for c in range(K)]

    sampler = sd.DPMSolver(steps=args.steps, order=2, denoise=True)
    sample_seed = 10_000 * (seed + 2)
    os.makedirs(RESULTS, exist_ok=True)
    rows, pngs = [], []
    model.eval()
    with trainer.ema.average_parameters():
        for w in WEIGHTS:
            xs, nfe, evals, secs = sample_classes(
                sde, lambda c: sd.classifier_free_guidance(model, c, scale=w), K, args.per_class,
                train.shape, sampler, sample_seed)
            xs = [x.clamp(-1, 1) for x in xs]
            acc = accuracy_per_class(clf, xs)
            worst = min(range(K), key=lambda c: acc[c])
            rows.append(f"| {w} | {sum(acc) / K:.3f} | {acc[worst]:.2f} (digit {worst}) | "
                        f"{pairwise_distance(xs):.2f} | {nfe} | {evals} | {secs:.1f} |")
            shown = torch.cat([x[:min(10, len(x))] for x in xs])
            path = os.path.join(RESULTS, f"{args.prefix}guidance_digits_seed{seed}_w{w:g}.png")
            pngs.append(sd.plot.save_samples(shown, path, title=f"CFG w = {w:g} (row = digit 0 … 9)"))

    print("## Part 2: digits 8×8, conditional U-Net\n")
    budget = (f"{args.digits_steps} steps" if args.digits_steps else f"{args.cpu_seconds:.0f} CPU s budget")
    print(f"Model: ScoreModel(UNet(channels {args.channels}, mults (1, 2), attention at 4×4, dropout {args.dropout}, "
          f"fourier_scale {args.fourier_scale}, num_classes 10), {n_params / 1e3:.0f}k parameters), "
          f"{args.parameterization} parameterization, sigma_data 0.8, VP SDE; Trainer (batch {args.batch_size}, lr "
          f"{args.lr}, warm-up 100, ×0.1 from step {decayed_at}, likelihood weighting + importance sampling, label "
          f"dropout 0.1, EMA {args.ema}), {budget}: {training_line(trainer)}, {cpu:.0f} CPU s, {wall:.0f} wall s.")
    print(f"Sampler: DPM-Solver++ 2M, {args.steps} steps + Tweedie denoising (eps 1e-3), {args.per_class} images "
          f"per digit, clipped to [−1, 1]; EMA weights.")
    print(f"Real-data classifier: LogisticRegression (lbfgs, C = 1, max_iter {args.max_iter}) on the "
          f"{len(train)} training images' pixels (fit in {fit_s:.1f} s).\n")
    print("| w | accuracy of the real-data classifier | worst digit | mean within-digit pairwise L2 | NFE per digit "
          "| network evals (all digits) | sampling wall s |")
    print("|---:|---:|---:|---:|---:|---:|---:|")
    worst = min(range(K), key=lambda c: real_acc[c])
    print(f"| real test images ({len(test)}) | {real_overall:.3f} | {real_acc[worst]:.2f} (digit {worst}) | "
          f"{pairwise_distance(test_by_class):.2f} | – | – | – |")
    worst = min(range(K), key=lambda c: deq_acc[c])
    print(f"| real test images, dequantized | {deq_overall:.3f} | {deq_acc[worst]:.2f} (digit {worst}) | "
          f"{pairwise_distance(deq_by_class):.2f} | – | – | – |")
    print(f"| real training images ({len(train)}) | – | – | {pairwise_distance(train_by_class):.2f} | – | – | – |")
    for row in rows:
        print(row)
    print(f"\nReal-image accuracies are over all test images of a digit (about 30 each); sample accuracies are "
          f"the mean over digits of {args.per_class} samples each. Grids: {', '.join(pngs)}\n")


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--part", choices=["2d", "digits", "all"], default="all")
    p.add_argument("--cpu-seconds", type=float, default=600.0, help="digits training budget (process CPU time)")
    p.add_argument("--digits-steps", type=int, default=0, help="train the digits model this many steps instead")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--quick", action="store_true", help="tiny sizes: a smoke run in under a minute")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--steps", type=int, default=50, help="DPM-Solver++ 2M steps (both parts)")
    p.add_argument("--steps-2d", type=int, default=5000, help="training steps of the 2-D model")
    p.add_argument("--n-2d", type=int, default=2000, help="samples per class in 2-D")
    p.add_argument("--n-truth", type=int, default=100_000, help="oracle draws per class for −H(x | c)")
    p.add_argument("--no-classifier-guidance", action="store_true")
    p.add_argument("--per-class", type=int, default=50, help="digit samples per class")
    p.add_argument("--channels", type=int, default=16)
    p.add_argument("--dropout", type=float, default=0.1)
    p.add_argument("--fourier-scale", type=float, default=16.0)
    p.add_argument("--parameterization", default="eps", choices=["eps", "v"])
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--lr", type=float, default=1e-3)
    p.add_argument("--lr-decay", type=float, default=0.2,
                   help="the lr is divided by 10 for this last fraction of the digits budget")
    p.add_argument("--ema", type=float, default=0.999)
    p.add_argument("--max-iter", type=int, default=5000, help="LogisticRegression iterations")
    args = p.parse_args()
    if args.quick:
        args.cpu_seconds, args.steps_2d, args.n_2d, args.n_truth = 8.0, 300, 200, 5000
        args.per_class, args.steps = 10, 20
    args.prefix = "quick_" if args.quick else ""          # a smoke run does not overwrite the real figures
    torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)

    print("# Guidance benchmark\n")
    print(f"Machine: {platform.platform()}, {platform.processor() or platform.machine()}, {os.cpu_count()} CPUs; "
          f"Python {platform.python_version()}, torch {torch.__version__}, {torch.get_num_threads()} torch thread(s).")
    print(f"Settings: {', '.join(f'{k}={v}' for k, v in vars(args).items() if k != 'prefix')}\n")
    t0, c0 = time.perf_counter(), time.process_time()
    if args.part in ("2d", "all"):
        part_2d(args)
    if args.part in ("digits", "all"):
        part_digits(args)
    print(f"Total: {time.perf_counter() - t0:.0f} wall s, {time.process_time() - c0:.0f} CPU s.")


if __name__ == "__main__":
    main()
