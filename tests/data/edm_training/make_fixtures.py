"""Write fixtures.pt from NVlabs/edm's own loss code (run with their environment; nothing of theirs is copied here).

    /work/peers/venv/bin/python tests/data/edm_training/make_fixtures.py /work/peers/edm

For each of their losses (EDMLoss, VPLoss, VELoss) on its preconditioning around one small SongUNet (the same
weights for all three), conditional (3 classes) and not, this records the per-element loss their
``loss_fn(net=..., images=..., labels=...)`` returns after ``torch.manual_seed(seed)``, the number their training loop
backpropagates (the sum over the batch divided by the batch size) and its gradient (all parameters,
flattened in ``parameters()`` order). The test draws σ and n from a
generator seeded alike: on the CPU both streams are mt19937 from the same seed, consumed in the same order.
"""
import os
import sys

import torch

edm_root = sys.argv[1] if len(sys.argv) > 1 else "/work/peers/edm"
sys.path.insert(0, edm_root)
from training import loss as their_loss, networks  # noqa: E402

torch.manual_seed(0)
NET = dict(img_resolution=4, img_channels=2, model_type="SongUNet", model_channels=4, channel_mult=[1],
           num_blocks=1, attn_resolutions=[4], dropout=0.0)
BATCH, SEED = 6, 1234
images = torch.rand(BATCH, 2, 4, 4) * 2 - 1
labels = torch.tensor([0, 2, 1, 1, 0, 2])
states = {}
for label_dim in (0, 3):
    net = networks.EDMPrecond(label_dim=label_dim, **NET)
    with torch.no_grad():     # their init zeroes the output layers: perturb every weight so that D depends on F
        for p in net.parameters():
            p.add_(torch.randn_like(p) * 0.05)
    states[label_dim] = {k: v.detach().clone() for k, v in net.state_dict().items()}
out = {"net_kwargs": dict(NET), "images": images, "labels": labels, "seed": SEED,
       "states": {"uncond": states[0], "cond": states[3]}, "cases": {}}
for name, precond, loss_cls in (("edm", networks.EDMPrecond, their_loss.EDMLoss),
                                ("edm_vp", networks.VPPrecond, their_loss.VPLoss),
                                ("edm_ve", networks.VEPrecond, their_loss.VELoss)):
    for label_dim in (0, 3):
        net = precond(label_dim=label_dim, **NET)
        net.load_state_dict(states[label_dim])        # the same keys for every preconditioning
        net.train()
        onehot = torch.nn.functional.one_hot(labels, 3).float() if label_dim else None
        torch.manual_seed(SEED)
        per_element = loss_cls()(net=net, images=images, labels=onehot)
        backprop = per_element.sum() / BATCH          # their loop: loss.sum().mul(loss_scaling / batch_gpu_total)
        backprop.backward()
        out["cases"][f"{name}-{'cond' if label_dim else 'uncond'}"] = {
            "per_element": per_element.detach(), "backprop": backprop.detach(),
            "grad": torch.cat([p.grad.detach().reshape(-1) for p in net.parameters()])}   # in parameter order
# Parameter counts of their CIFAR-10 networks as their train.py builds them (no augmentation), for the presets.
ARCHS = {"ddpmpp": dict(model_type="SongUNet", embedding_type="positional", encoder_type="standard",
                        decoder_type="standard", channel_mult_noise=1, resample_filter=[1, 1], model_channels=128,
                        channel_mult=[2, 2, 2]),
         "ncsnpp": dict(model_type="SongUNet", embedding_type="fourier", encoder_type="residual",
                        decoder_type="standard", channel_mult_noise=2, resample_filter=[1, 3, 3, 1],
                        model_channels=128, channel_mult=[2, 2, 2]),
         "adm": dict(model_type="DhariwalUNet", model_channels=192, channel_mult=[1, 2, 3, 4])}
out["parameter_counts"] = {}
for arch, kwargs in ARCHS.items():
    for label_dim in (0, 10):
        net = networks.EDMPrecond(img_resolution=32, img_channels=3, label_dim=label_dim, dropout=0.13, **kwargs)
        out["parameter_counts"][f"{arch}-{'cond' if label_dim else 'uncond'}"] = sum(p.numel() for p in net.parameters())
print(out["parameter_counts"])
torch.save(out, os.path.join(os.path.dirname(os.path.abspath(__file__)), "fixtures.pt"))
print({k: float(v["backprop"]) for k, v in out["cases"].items()})
