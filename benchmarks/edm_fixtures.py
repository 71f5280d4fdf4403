"""Write the EDM fixtures of tests/test_zoo_edm.py with NVlabs/edm's own code (run with their environment).

    /work/peers/venv/bin/python benchmarks/edm_fixtures.py [--edm /work/peers/edm] [--out tests/data/edm]

Each fixture is a snapshot pickled the way their training loop pickles one (a deep copy in eval mode without
gradients, then ``pickle.dump`` of ``dict(ema=..., loss_fn=..., augment_pipe=..., dataset_kwargs=...)``), so it
carries their persistence records (module source + constructor arguments + state), gzipped to keep the test data
small. The tiny networks' weights are perturbed away from their init (whose last layers are zero or tiny) and
rounded to multiples of 2^-8 so that gzip compresses them. ``expected.pt`` (a ``torch.save`` of tensors only)
holds their denoiser's outputs D(x; σ) at a few σ, with and without augmentation labels, and, for the VP model,
their σ(t) at a few t. Nothing here is imported by scoresde or its tests.

``--what augment`` writes tests/data/edm_augment/fixtures.pt instead (tests/test_zoo_edm_augment.py): their
``AugmentPipe``'s images and labels after ``torch.manual_seed(seed)``, for each geometric transform alone and their
train.py's combination, at p = 0.12, 1 (and 0 for the combination), on small image batches, and their EDMLoss with
that pipeline on a tiny network with 9 augmentation labels.
"""
import argparse
import copy
import gzip
import os
import pickle
import sys

import torch


def parse():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--edm", default="/work/peers/edm", help="checkout of NVlabs/edm (commit 008a4e5)")
    p.add_argument("--out", default=None, help="default: tests/data/edm (networks), tests/data/edm_augment (augment)")
    p.add_argument("--what", choices=["networks", "augment", "all"], default="all")
    return p.parse_args()


DATA = os.path.join(os.path.dirname(__file__), "..", "tests", "data")
#: Their train.py's pipeline (--augment=p): the multipliers of each transform.
TRAIN_PY_AUGMENT = dict(xflip=1e8, yflip=1, scale=1, rotate_frac=1, aniso=1, translate_frac=1)


def augment_fixtures(out):
    """Their AugmentPipe on (4, 3, 8, 12) images (non-square: H and W kept apart) and on (2, 1, 32, 32); their
    EDMLoss with their train.py's pipeline (p = 0.5) on a tiny conditional net with augment_dim = 9."""
    from training import augment, loss, networks

    os.makedirs(out, exist_ok=True)
    g = torch.Generator().manual_seed(2024)
    batches = {"rgb": torch.rand(4, 3, 8, 12, generator=g) * 2 - 1,
               "gray": torch.rand(2, 1, 32, 32, generator=g) * 2 - 1}
    cases = []
    transforms = [{name: 1} for name in TRAIN_PY_AUGMENT] + [dict(TRAIN_PY_AUGMENT)]
    for p in (0.12, 1.0):
        for kwargs in transforms:
            cases.append(("rgb", p, kwargs))
    cases += [("rgb", 0.0, dict(TRAIN_PY_AUGMENT)), ("gray", 1.0, dict(TRAIN_PY_AUGMENT))]
    result = {"images": batches, "cases": []}
    for i, (batch, p, kwargs) in enumerate(cases):
        seed = 100 + i
        torch.manual_seed(seed)
        images, labels = augment.AugmentPipe(p=p, **kwargs)(batches[batch])
        result["cases"].append(dict(batch=batch, p=p, kwargs=kwargs, seed=seed, images=images.clone(),
                                    labels=labels.clone()))   # clone: not the storage of a cropped view
        print(f"augment p={p} {kwargs}: labels {tuple(labels.shape)}, |y - x| = "
              f"{(images - batches[batch]).abs().mean():.3f}")

    # Their loss with augmentation: σ, then the pipe's draws, then n, all from the global RNG.
    net_kwargs = dict(img_resolution=8, img_channels=3, label_dim=3, augment_dim=9, model_type="SongUNet",
                      embedding_type="positional", encoder_type="standard", decoder_type="standard",
                      channel_mult_noise=1, resample_filter=[1, 1], model_channels=8, channel_mult=[1], num_blocks=1,
                      attn_resolutions=[], dropout=0.0)
    torch.manual_seed(0)
    net = networks.EDMPrecond(**net_kwargs)
    perturb(net, seed=7)
    images = torch.rand(4, 3, 8, 8, generator=g) * 2 - 1
    labels = torch.tensor([0, 2, 1, 1])
    torch.manual_seed(55)
    pipe = augment.AugmentPipe(p=0.5, **TRAIN_PY_AUGMENT)
    per_element = loss.EDMLoss()(net=net.train(), images=images, labels=torch.eye(3)[labels], augment_pipe=pipe)
    result["loss"] = dict(net_kwargs=net_kwargs, state={k: v.clone() for k, v in net.state_dict().items()},
                          images=images, labels=labels, seed=55, p=0.5, per_element=per_element.detach())
    path = os.path.join(out, "fixtures.pt")
    torch.save(result, path)
    print(f"{path}: {os.path.getsize(path)} bytes")


def perturb(net, seed):
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in net.parameters():
            scale = float(p.std()) if p.numel() > 1 else 0.0
            noise = torch.randn(p.shape, generator=g) * (0.5 * scale + 0.05)
            p.copy_(torch.round((p + noise) * 256) / 256)


def main():
    args = parse()
    sys.path.insert(0, args.edm)
    if args.what in ("augment", "all"):
        augment_fixtures(args.out or os.path.join(DATA, "edm_augment"))
    if args.what in ("networks", "all"):
        networks_fixtures(args.out or os.path.join(DATA, "edm"))


def networks_fixtures(out):
    import dnnlib
    from training import augment, loss, networks

    os.makedirs(out, exist_ok=True)
    expected = {}
    for i, (name, (precond, kwargs, protocol, extras)) in enumerate(FIXTURES.items()):
        torch.manual_seed(i)
        net = getattr(networks, precond)(img_resolution=8, img_channels=3, **kwargs)
        perturb(net, seed=100 + i)
        data = dict(ema=net, loss_fn=loss.EDMLoss() if extras else None,
                    augment_pipe=augment.AugmentPipe(p=0.12, xflip=1e8, yflip=1, scale=1) if extras else None,
                    dataset_kwargs=dict(dnnlib.EasyDict(class_name="training.dataset.ImageFolderDataset",
                                                        path="cifar10-32x32.zip", use_labels=True)))
        for key, value in data.items():
            if isinstance(value, torch.nn.Module):
                data[key] = copy.deepcopy(value).eval().requires_grad_(False).cpu()
        with gzip.open(os.path.join(out, name + ".pkl.gz"), "wb", compresslevel=9) as f:
            pickle.dump(data, f, protocol=protocol)
        ema = data["ema"]

        g = torch.Generator().manual_seed(1000 + i)
        batch = 3
        x = torch.randn(batch, 3, 8, 8, generator=g)
        if precond == "iDDPMPrecond":  # away from the midpoints between its discrete levels u_j
            sigma = ema.u[torch.tensor([900, 500, 40])].clone() * torch.tensor([1.0, 1.0001, 0.9999])
        else:
            sigma = torch.tensor([0.01, 0.7, 25.0])
        x = x * (sigma.reshape(-1, 1, 1, 1) + 0.5)
        labels = torch.tensor([2, 0, 1])[:batch] if ema.label_dim else None
        onehot = torch.eye(ema.label_dim)[labels] if ema.label_dim else None
        entry = dict(x=x, sigma=sigma, D=ema(x, sigma, onehot).detach())
        if ema.label_dim:
            entry["labels"] = labels
            entry["D_no_labels"] = ema(x, sigma, None).detach()  # their zero label vector
        if kwargs.get("augment_dim"):
            aug = torch.randn(batch, kwargs["augment_dim"], generator=g)
            entry["augment_labels"] = aug
            entry["D_augment"] = ema(x, sigma, onehot, augment_labels=aug).detach()
        if precond == "VPPrecond":
            t = torch.tensor([0.02, 0.3, 0.9], dtype=torch.float64)
            sig_t = torch.sqrt(torch.expm1(0.5 * ema.beta_d * t ** 2 + ema.beta_min * t))
            entry["t"], entry["sigma_t"] = t, sig_t
            entry["D_t"] = ema(x, sig_t.to(torch.float32), onehot).detach()
        if precond == "iDDPMPrecond":
            entry["u"] = ema.u.clone()
            entry["round_index"] = ema.round_sigma(torch.tensor([0.003, 0.5, 3.0, 60.0]), return_index=True)
        entry["sigma_min"] = torch.tensor(float(ema.sigma_min), dtype=torch.float64)
        entry["sigma_max"] = torch.tensor(float(ema.sigma_max), dtype=torch.float64)
        expected[name] = entry
        size = os.path.getsize(os.path.join(out, name + ".pkl.gz"))
        print(f"{name}: {sum(p.numel() for p in ema.parameters())} parameters, {size} bytes, "
              f"|D| = {entry['D'].abs().mean():.3f}")
    torch.save(expected, os.path.join(out, "expected.pt"))


if __name__ == "__main__":
    main()
