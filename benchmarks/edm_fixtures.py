"""Write the EDM fixtures of tests/test_zoo_edm.py with NVlabs/edm's own code (run with their environment).

    /work/peers/venv/bin/python benchmarks/edm_fixtures.py [--edm /work/peers/edm] [--out tests/data/edm]

Each fixture is a snapshot pickled the way their training loop pickles one (a deep copy in eval mode without
gradients, then ``pickle.dump`` of ``dict(ema=..., loss_fn=..., augment_pipe=..., dataset_kwargs=...)``), so it
carries their persistence records (module source + constructor arguments + state), gzipped to keep the test data
small. The tiny networks' weights are perturbed away from their init (whose last layers are zero or tiny) and
rounded to multiples of 2^-8 so that gzip compresses them. ``expected.pt`` (a ``torch.save`` of tensors only)
holds their denoiser's outputs D(x; σ) at a few σ, with and without augmentation labels, and, for the VP model,
their σ(t) at a few t. Nothing here is imported by scoresde or its tests.
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
    p.add_argument("--out", default=os.path.join(os.path.dirname(__file__), "..", "tests", "data", "edm"))
    return p.parse_args()


SONG = dict(model_channels=8, channel_mult=[1, 2], num_blocks=1, attn_resolutions=[4], dropout=0.1)
NCSNPP = dict(SONG, embedding_type="fourier", channel_mult_noise=2, encoder_type="residual",
              decoder_type="standard", resample_filter=[1, 3, 3, 1])
SKIP = dict(SONG, encoder_type="skip", decoder_type="skip")
# channels_per_head = 64 in their DhariwalUNet: 64 channels at 4x4 are needed for its attention to exist
DHARIWAL = dict(model_channels=16, channel_mult=[1, 4], channel_mult_emb=1, num_blocks=1, attn_resolutions=[4],
                dropout=0.1)
DHARIWAL_TINY = dict(model_channels=8, channel_mult=[1, 2], num_blocks=1, attn_resolutions=[], dropout=0.1)

#: name -> (preconditioning, constructor kwargs, protocol, with loss/augment pipe)
FIXTURES = {
    "edm_songunet_ncsnpp_cond_aug9": ("EDMPrecond", dict(NCSNPP, model_type="SongUNet", label_dim=3, augment_dim=9,
                                                         sigma_min=0.002, sigma_max=80.0), 4, True),
    "edm_dhariwal_uncond_aug9": ("EDMPrecond", dict(DHARIWAL_TINY, model_type="DhariwalUNet", augment_dim=9), 4, False),
    "vp_songunet_ddpmpp_uncond": ("VPPrecond", dict(SONG, model_type="SongUNet", beta_d=19.9, beta_min=0.1), 4,
                                  False),
    "vp_songunet_skip_cond": ("VPPrecond", dict(SKIP, model_type="SongUNet", label_dim=4, M=500, epsilon_t=1e-3), 2,
                              False),
    "ve_songunet_ncsnpp_cond_aug9": ("VEPrecond", dict(NCSNPP, model_type="SongUNet", label_dim=3, augment_dim=9,
                                                       sigma_min=0.02, sigma_max=100.0), 4, False),
    "iddpm_dhariwal_cond": ("iDDPMPrecond", dict(DHARIWAL, model_type="DhariwalUNet", label_dim=3), 4, False),
}


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
    import dnnlib
    from training import augment, loss, networks

    os.makedirs(args.out, exist_ok=True)
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
        with gzip.open(os.path.join(args.out, name + ".pkl.gz"), "wb", compresslevel=9) as f:
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
        size = os.path.getsize(os.path.join(args.out, name + ".pkl.gz"))
        print(f"{name}: {sum(p.numel() for p in ema.parameters())} parameters, {size} bytes, "
              f"|D| = {entry['D'].abs().mean():.3f}")
    torch.save(expected, os.path.join(args.out, "expected.pt"))


if __name__ == "__main__":
    main()
