"""The trainer's one job (Trainer.step) and the pieces around it: hooks, an injected optimizer and schedule, and
any loss under data-parallel training."""
import os
import subprocess
import sys
import textwrap

import pytest
import torch

import scoresde as sd
from scoresde.training import CheckpointHook, EMASnapshotHook, Hook, LogHook, default_hooks


def _setup(tmp_path=None, **config):
    torch.manual_seed(0)
    sde = sd.VPSDE()
    model = sd.ScoreModel(sd.nets.MLP(2, hidden=16, depth=1, time_embedding_dim=8), sde)
    data = sd.data.load("eight_gaussians", n=256)
    options = dict(steps=6, batch_size=32, progress=False, log_every=2, seed=1)
    if tmp_path is not None:
        options["out_dir"] = str(tmp_path)
    options.update(config)
    return model, sde, data, sd.TrainConfig(**options)


def test_step_is_the_training_loop_without_the_hooks():
    model, sde, data, config = _setup()
    looped = sd.Trainer(model, sde, data, config, hooks=[])
    looped.train(num_steps=3)
    model2, sde, data, config = _setup()
    stepped = sd.Trainer(model2, sde, data, config, hooks=[])
    records = [stepped.step(next(stepped.batches)) for _ in range(3)]
    assert [r["step"] for r in records] == [1, 2, 3] and stepped.global_step == 3
    assert set(records[0]) == {"step", "loss", "lr", "grad_norm"}
    for key, value in looped.model.state_dict().items():
        assert torch.equal(value, stepped.model.state_dict()[key]), key
    assert looped.history == []                       # no LogHook: nothing logged


def test_custom_hooks_run_on_their_period_and_at_the_end(tmp_path):
    calls = []

    class Spy(Hook):
        def start(self, trainer):
            calls.append(("start", trainer.global_step))

        def after_step(self, trainer, metrics, last):
            if self.due(metrics["step"]) or last:
                calls.append(("step", metrics["step"], last))

        def end(self, trainer):
            calls.append(("end", trainer.global_step))

    model, sde, data, config = _setup(tmp_path)
    trainer = sd.Trainer(model, sde, data, config, hooks=default_hooks(config) + [Spy(every=4)])
    trainer.train(num_steps=5)
    assert calls == [("start", 0), ("step", 4, False), ("step", 5, True), ("end", 5)]
    assert [r["step"] for r in trainer.history] == [2, 4, 5]          # LogHook: every 2 and the last step
    assert trainer.checkpoint_step == 5 and os.path.isfile(trainer.checkpoint_path)
    with pytest.raises(ValueError, match="every must be a non-negative integer"):
        LogHook(every=-1)
    assert isinstance(default_hooks(config)[-1], CheckpointHook)


def test_default_hooks_snapshot_the_power_emas_before_the_checkpoint(tmp_path):
    """With ema_snapshot_every the defaults hold an EMASnapshotHook just before the checkpoint, so a list built on
    them (defaults + one's own hook) writes the snapshots; a list without it trains but says it writes none."""
    snapshots = dict(ema_power=6.94, ema_snapshot_every=2, checkpoint_every=2)
    assert not any(isinstance(h, EMASnapshotHook) for h in default_hooks(_setup()[3]))
    model, sde, data, config = _setup(tmp_path / "a", **snapshots)
    kinds = [type(h) for h in default_hooks(config)]
    assert kinds[-2:] == [EMASnapshotHook, CheckpointHook] and kinds.count(EMASnapshotHook) == 1
    sd.Trainer(model, sde, data, config, hooks=default_hooks(config) + [Hook(every=3)]).train(num_steps=4)
    assert sorted(os.listdir(tmp_path / "a" / "ema_snapshots")) == ["ema_0000002.pt", "ema_0000004.pt"]
    model, sde, data, config = _setup(tmp_path / "b", **snapshots)
    with pytest.warns(UserWarning, match="no EMASnapshotHook"):
        trainer = sd.Trainer(model, sde, data, config, hooks=[CheckpointHook(2)])
    trainer.train(num_steps=2)
    assert not os.path.exists(tmp_path / "b" / "ema_snapshots")


def test_injected_optimizer_and_schedule():
    model, sde, data, config = _setup(lr=1.0)
    seen = []

    def schedule(step):
        seen.append(step)
        return 0.01 / (1 + step)

    trainer = sd.Trainer(model, sde, data, config, optimizer=lambda params: torch.optim.SGD(params, lr=123.0),
                         lr_schedule=schedule, hooks=[])
    assert isinstance(trainer.optimizer, torch.optim.SGD)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    metrics = trainer.step(next(trainer.batches))
    assert metrics["lr"] == 0.01 and seen == [0] and trainer.optimizer.param_groups[0]["lr"] == 0.01
    # One plain SGD step: θ' = θ − lr ∇ (the gradient norm was clipped to grad_clip = 1). In float32, the clipped
    # norm is off by at most (n/2 + 4) u relative (a norm of n terms in any order) and rounding θ' by u‖θ'‖.
    u, n = 2.0 ** -24, sum(v.numel() for v in before.values())
    size = sum(float(v.double().pow(2).sum()) for v in model.state_dict().values()) ** 0.5
    moved = sum(float((model.state_dict()[k].double() - before[k].double()).pow(2).sum()) for k in before) ** 0.5
    assert 0 < moved <= 0.01 * (1 + (n / 2 + 4) * u) + u * size
    with pytest.raises(TypeError, match="optimizer"):
        sd.Trainer(model, sde, data, config, optimizer="adam")
    # The default schedule is the linear warm-up of the config.
    warm = sd.Trainer(*_setup(lr=1e-3, warmup_steps=4)[:3], _setup(lr=1e-3, warmup_steps=4)[3], hooks=[])
    assert [warm.learning_rate(n) for n in range(5)] == pytest.approx([2.5e-4, 5e-4, 7.5e-4, 1e-3, 1e-3])


_DDP_SCRIPT = textwrap.dedent("""
    import os, sys, torch
    import scoresde as sd
    from scoresde.training import DistributedContext

    def plain_loss(sde, model, x0, weighting, importance_sampling, eps, generator):
        # A user loss with no shard argument: the trainer hands each rank its rows.
        t = eps + (sde.T - eps) * torch.rand(x0.shape[0], generator=generator, dtype=x0.dtype)
        x_t, z = sde.sample_marginal(x0, t, generator=generator)
        return ((sde.std(t)[:, None] * model(x_t, t) + z) ** 2).sum(1).mean()

    dist = DistributedContext.from_environment("cpu")
    torch.manual_seed(0)
    sde = sd.VPSDE()
    model = sd.ScoreModel(sd.nets.MLP(2, hidden=16, depth=1, time_embedding_dim=8), sde)
    config = sd.TrainConfig(steps=5, batch_size=32, progress=False, log_every=1, out_dir=sys.argv[1])
    trainer = sd.Trainer(model, sde, sd.data.load("eight_gaussians", n=256), config, loss_fn=plain_loss,
                         distributed=dist)
    history = trainer.train()
    torch.save({"model": model.state_dict(), "loss": [r["loss"] for r in history]},
               os.path.join(sys.argv[1], f"rank{dist.rank}.pt"))
    dist.close()
""")


@pytest.mark.slow
def test_any_loss_trains_under_two_process_ddp(tmp_path):
    script = tmp_path / "ddp_plain_loss.py"
    script.write_text(_DDP_SCRIPT)
    env = dict(os.environ, OMP_NUM_THREADS="1")
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2", str(script),
           str(tmp_path)]
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    r0, r1 = (torch.load(tmp_path / f"rank{r}.pt", weights_only=True) for r in (0, 1))
    for key, value in r0["model"].items():                 # gradients averaged: the ranks stay identical
        assert torch.equal(value, r1["model"][key]), key
    assert len(r0["loss"]) == 5 and all(torch.isfinite(torch.tensor(r0["loss"])))
    assert os.path.isfile(tmp_path / "checkpoint.pt")
