"""EDM's U-Nets (scoresde.nets.edm, scoresde.nets.edm_layers): their state_dict layout (digests of the
key/shape/dtype list and parameter order, taken from NVlabs/edm's networks.py at commit 008a4e5 built with the
same options), outputs recorded from their code (same seed, so same initial weights), and the layers' math
checked against formulas written out here."""
import math

import pytest
import torch
from torch.nn import functional as F

from scoresde.nets import edm_layers as L
from scoresde.nets.edm import DhariwalUNet, SongUNet, _dropped_labels
from test_nets_ncsnpp import perturbed, structure_digest

TINY = dict(img_resolution=8, in_channels=3, out_channels=3, model_channels=16, channel_mult=[1, 2], num_blocks=1,
            attn_resolutions=[4])
DDPMPP = dict(embedding_type="positional", encoder_type="standard", decoder_type="standard", channel_mult_noise=1,
              resample_filter=[1, 1])
NCSNPP = dict(embedding_type="fourier", encoder_type="residual", decoder_type="standard", channel_mult_noise=2,
              resample_filter=[1, 3, 3, 1])
ADM = dict(img_resolution=8, in_channels=3, out_channels=3, model_channels=64, channel_mult=[1, 2], num_blocks=1,
           attn_resolutions=[4])  # 64 channels: ADM's attention has out_channels // 64 heads

# name: (class, kwargs, their structure digest, their float64 output: sum, sum of squares, first three values)
THEIRS = {
    "ddpmpp": (SongUNet, {**TINY, **DDPMPP}, ("8378c3375b6798b7", 146, 189347),
               (22.46780421538195, 883.0241552596743, [0.14131955883498643, -4.55440683853614e-05,
                                                       1.8562237537283774])),
    "ncsnpp": (SongUNet, {**TINY, **NCSNPP}, ("e79413ea03285800", 150, 190819),
               (-383.9218300555043, 1491.733381311743, [0.09429355196412342, 1.071107200082009,
                                                        -1.7056570790275258])),
    "skip_skip_cond": (SongUNet, {**TINY, **NCSNPP, "encoder_type": "skip", "decoder_type": "skip", "label_dim": 4,
                                  "augment_dim": 9}, ("1bc30767aa096331", 158, 191814),
                       (720.604081386571, 6186.784384190947, [2.4076605544769474, -0.5784735683946448,
                                                              -0.806919628902486])),
    "adm_cond": (DhariwalUNet, {**ADM, "label_dim": 4, "augment_dim": 9, "out_channels": 6},
                 ("184b4fc607d08542", 150, 3296710),
                 (260.89372920140534, 8633.680792401576, [-2.435369670396039, -4.947567998867512,
                                                          -6.070950485493975])),
}


def inputs(label_dim=0, augment_dim=0, batch=2, side=8, dtype=torch.float64):
    g = torch.Generator().manual_seed(1)
    x = torch.randn(batch, 3, side, side, generator=g, dtype=dtype)
    noise = torch.randn(batch, generator=g, dtype=dtype)
    labels = torch.eye(label_dim, dtype=dtype)[[1, 3]] if label_dim else None
    augment = torch.randn(batch, augment_dim, generator=g, dtype=dtype) if augment_dim else None
    return x, noise, labels, augment


def tiny(cls=SongUNet, scale=0.3, **options):
    """The net built with seed 0 (EDM's initial weights), perturbed in float32, then in float64."""
    torch.manual_seed(0)
    return perturbed(cls(**options), scale=scale).double()


@pytest.mark.parametrize("name", sorted(THEIRS))
def test_structure_matches_edm(name):
    cls, options, digest, _ = THEIRS[name]
    torch.manual_seed(0)
    assert structure_digest(cls(**options)) == digest


@pytest.mark.parametrize("name", sorted(THEIRS))
def test_output_matches_edm_with_the_same_seed(name):
    """Same seed → EDM's initial weights (same draws in the same order); perturbed → their recorded output."""
    cls, options, _, (total, squares, first) = THEIRS[name]
    net = tiny(cls, **options)
    with torch.no_grad():
        y = net(*inputs(options.get("label_dim", 0), options.get("augment_dim", 0)))
    assert y.shape == (2, options["out_channels"], 8, 8) and y.dtype == torch.float64
    # float64 everywhere but the attention's logits and softmax, which EDM (and ours) take in float32: another CPU
    # kernel rounds them differently (u = 6e-8 on logits of size ~10², amplified through the blocks after it).
    # Measured under ATEN_CPU_CAPABILITY=default: up to 1.3e-5 of the outputs' scale. So 1e-4 of that scale (the
    # RMS output); a wrong layer or weight moves these statistics by O(1) of it.
    rms = math.sqrt(squares / y.numel())
    assert y.sum().item() == pytest.approx(total, abs=1e-4 * rms * y.numel())
    assert y.square().sum().item() == pytest.approx(squares, rel=2e-4)
    assert y.flatten()[:3].tolist() == pytest.approx(first, abs=1e-4 * rms)


@pytest.mark.slow
@pytest.mark.parametrize("cls, options, digest", [
    (SongUNet, dict(img_resolution=32, in_channels=3, out_channels=3, augment_dim=9, model_channels=128,
                    channel_mult=[2, 2, 2], dropout=0.13, **DDPMPP), ("8129281d44aaa130", 425, 55733891)),
    (SongUNet, dict(img_resolution=32, in_channels=3, out_channels=3, augment_dim=9, model_channels=128,
                    channel_mult=[2, 2, 2], dropout=0.13, **NCSNPP), ("219e984de42fae15", 432, 56397827)),
    (DhariwalUNet, dict(img_resolution=64, in_channels=3, out_channels=3, label_dim=1000, model_channels=192,
                        channel_mult=[1, 2, 3, 4], dropout=0.1), ("e2e83c2196b427f1", 553, 295899267)),
], ids=["ddpmpp-cifar10", "ncsnpp-cifar10", "adm-imagenet64"])
def test_full_size_structure_matches_edm(cls, options, digest):
    """EDM's train.py configurations (cifar10 ddpmpp / ncsnpp, imagenet-64 adm), built on the meta device."""
    with torch.device("meta"):
        assert structure_digest(cls(**options)) == digest


def test_module_names_are_edm_names():
    net = SongUNet(**{**TINY, **NCSNPP, "encoder_type": "skip", "decoder_type": "skip", "label_dim": 4,
                      "augment_dim": 9})
    assert list(net.enc) == ["8x8_conv", "8x8_block0", "4x4_down", "4x4_aux_down", "4x4_aux_skip", "4x4_block0"]
    assert list(net.dec) == ["4x4_in0", "4x4_in1", "4x4_block0", "4x4_block1", "4x4_aux_norm", "4x4_aux_conv",
                             "8x8_up", "8x8_block0", "8x8_block1", "8x8_aux_up", "8x8_aux_norm", "8x8_aux_conv"]
    names = [n for n, _ in net.named_children()]
    assert names == ["map_noise", "map_label", "map_augment", "map_layer0", "map_layer1", "enc", "dec"]
    assert "map_noise.freqs" in net.state_dict() and "enc.4x4_down.conv0.resample_filter" in net.state_dict()
    adm = DhariwalUNet(**{**ADM, "label_dim": 4, "augment_dim": 9})
    assert [n for n, _ in adm.named_children()] == ["map_noise", "map_augment", "map_layer0", "map_layer1",
                                                    "map_label", "enc", "dec", "out_norm", "out_conv"]
    assert adm.enc["8x8_block0"].num_heads == 0 and adm.dec["4x4_in0"].num_heads == 2
    assert adm.enc["4x4_down"].skip.weight is None  # ADM's resampling skip has no parameters


def test_positional_embedding_formula():
    x = torch.tensor([0.0, 0.3, -2.5, 700.0], dtype=torch.float64)
    for endpoint in (False, True):
        emb = L.PositionalEmbedding(8, max_positions=100, endpoint=endpoint)(x)
        denominator = 3 if endpoint else 4
        for i in range(4):
            omega = 0.01 ** (i / denominator)  # ω is computed in float32: 700·ω is off by ~1e-5
            assert torch.allclose(emb[:, i], torch.cos(x * omega), rtol=0, atol=1e-4)
            assert torch.allclose(emb[:, 4 + i], torch.sin(x * omega), rtol=0, atol=1e-4)
        assert emb[0, :4].tolist() == [1.0] * 4 and emb[0, 4:].tolist() == [0.0] * 4
        assert emb.dtype == torch.float64 and emb.shape == (4, 8)


def test_fourier_embedding_formula():
    torch.manual_seed(0)
    layer = L.FourierEmbedding(6, scale=16)
    assert layer.freqs.shape == (3,) and 4 < layer.freqs.std() < 40
    x = torch.tensor([0.1, -1.3], dtype=torch.float64)
    angles = 2 * math.pi * x[:, None] * layer.freqs[None].double()
    assert torch.allclose(layer(x), torch.cat([angles.cos(), angles.sin()], 1), atol=1e-4)


def test_song_unet_swaps_cos_and_sin():
    """The blocks see [sin, cos], not the embedding's [cos, sin]: the first map layer's input."""
    net = SongUNet(**{**TINY, **DDPMPP}).double()
    seen = []
    net.map_layer0.register_forward_hook(lambda m, args, out: seen.append(args[0]))
    noise = torch.tensor([0.7, -0.2], dtype=torch.float64)
    net(torch.zeros(2, 3, 8, 8, dtype=torch.float64), noise)
    cos_sin = net.map_noise(noise)
    assert torch.equal(seen[0], torch.cat([cos_sin[:, 8:], cos_sin[:, :8]], 1))


def filter_2d(taps, dtype=torch.float64):
    f = torch.tensor(taps, dtype=dtype)
    return torch.outer(f, f) / f.sum() ** 2


def correlate(x, kernel, stride):
    """Per-channel valid correlation by a loop over the taps (no conv primitive)."""
    k = kernel.shape[0]
    out_h, out_w = (x.shape[2] - k) // stride + 1, (x.shape[3] - k) // stride + 1
    out = torch.zeros(*x.shape[:2], out_h, out_w, dtype=x.dtype)
    for a in range(k):
        for b in range(k):
            out += kernel[a, b] * x[:, :, a:a + stride * (out_h - 1) + 1:stride, b:b + stride * (out_w - 1) + 1:stride]
    return out


def direct_down(x, taps, padding):
    """Zero-pad, filter, keep every second pixel."""
    return correlate(F.pad(x, (padding,) * 4), filter_2d(taps), 2)


def direct_up(x, taps, padding):
    """Insert zeros between pixels, pad by k − 1 − padding (one less after the last pixel), filter with 4·f."""
    k = len(taps)
    z = torch.zeros(*x.shape[:2], 2 * x.shape[2], 2 * x.shape[3], dtype=x.dtype)
    z[:, :, ::2, ::2] = x
    lo, hi = k - 1 - padding, k - 2 - padding
    return correlate(F.pad(z, (lo, hi, lo, hi)), 4 * filter_2d(taps).flip(0, 1), 1)


def direct_filter(x, taps, up):
    pad = (len(taps) - 1) // 2
    return direct_up(x, taps, pad) if up else direct_down(x, taps, pad)


@pytest.mark.parametrize("taps", [[1, 1], [1, 3, 3, 1]])
@pytest.mark.parametrize("up", [False, True])
def test_resampling_is_the_filter(taps, up):
    torch.manual_seed(0)
    x = torch.randn(2, 3, 8, 8, dtype=torch.float64)
    layer = L.Conv2d(3, 3, 0, up=up, down=not up, resample_filter=taps)
    y = layer(x)
    assert y.shape == ((2, 3, 16, 16) if up else (2, 3, 4, 4))
    assert torch.allclose(y, direct_filter(x, taps, up), atol=1e-12)
    if taps == [1, 1]:  # box filter: nearest-neighbour up, 2x2 mean down
        expected = x.repeat_interleave(2, 2).repeat_interleave(2, 3) if up else F.avg_pool2d(x, 2)
        assert torch.allclose(y, expected, atol=1e-12)


def test_resampling_conv_orders():
    """Unfused: resample then conv. Fused down: conv with the filter's padding added, then the stride-2 filter;
    fused up: upsample with padding max(p_f − p_w, 0), then conv with max(p_w − p_f, 0)."""
    torch.manual_seed(0)
    x = torch.randn(2, 3, 8, 8, dtype=torch.float64)
    taps = [1, 3, 3, 1]
    for up in (False, True):
        plain = L.Conv2d(3, 5, 3, up=up, down=not up, resample_filter=taps).double()
        fused = L.Conv2d(3, 5, 3, up=up, down=not up, resample_filter=taps, fused_resample=True).double()
        fused.load_state_dict(plain.state_dict())
        with torch.no_grad():
            plain.bias.normal_()
            fused.bias.copy_(plain.bias)
        bias = plain.bias[None, :, None, None]
        resampled = direct_filter(x, taps, up)
        assert torch.allclose(plain(x), F.conv2d(resampled, plain.weight, padding=1) + bias, atol=1e-12)
        if up:  # p_f = p_w = 1: upsample with padding 0 (2H + 2 pixels), then a valid 3x3 conv
            expected = F.conv2d(direct_up(x, taps, 0), plain.weight) + bias
        else:  # conv with padding 1 + 1, then the stride-2 filter without padding
            expected = direct_down(F.conv2d(x, plain.weight, padding=2), taps, 0) + bias
        y = fused(x)
        assert y.shape == expected.shape and torch.allclose(y, expected, atol=1e-12)


def test_group_norm_groups():
    assert L.GroupNorm(256).num_groups == 32 and L.GroupNorm(64).num_groups == 16 and L.GroupNorm(6).num_groups == 1
    torch.manual_seed(0)
    x = torch.randn(2, 16, 3, 3, dtype=torch.float64)
    y = L.GroupNorm(16, eps=1e-6).double()(x)  # 4 groups of 4 channels
    g = x.reshape(2, 4, -1)
    expected = ((g - g.mean(2, keepdim=True)) / (g.var(2, unbiased=False, keepdim=True) + 1e-6).sqrt()).reshape(x.shape)
    assert torch.allclose(y, expected, atol=1e-12)


def test_attention_weights_invariants():
    torch.manual_seed(0)
    q, k = torch.randn(3, 8, 5, dtype=torch.float64), torch.randn(3, 8, 7, dtype=torch.float64)
    w = L.attention_weights(q, k)
    assert w.shape == (3, 5, 7) and w.dtype == torch.float64
    assert torch.allclose(w.sum(2), torch.ones(3, 5, dtype=torch.float64), atol=1e-6)
    # logits are float32: shifting every key by the same vector adds a constant per query row → same weights
    assert torch.allclose(L.attention_weights(q, k + torch.randn(3, 8, 1, dtype=torch.float64)), w, atol=1e-5)
    expected = torch.softmax(torch.einsum("ncq,nck->nqk", q, k) / math.sqrt(8), dim=2)
    assert torch.allclose(w, expected, atol=1e-5)
    half = L.attention_weights(q.half(), k.half())
    assert half.dtype == torch.float16 and torch.allclose(half.double(), w, atol=2e-3)


def test_block_attention_layout():
    """qkv's output channel h·3c + 3i + j is channel i of head h of (q, k, v)[j]."""
    torch.manual_seed(0)
    block = L.UNetBlock(8, 8, 4, attention=True, num_heads=2, adaptive_scale=False).double()
    perturbed(block)
    x, emb = torch.randn(2, 8, 3, 3, dtype=torch.float64), torch.randn(2, 4, dtype=torch.float64)
    trunk, attended = [], []
    block.conv1.register_forward_hook(lambda m, a, out: trunk.append(out.clone()))
    y = block(x, emb)
    h = trunk[0] + block.skip(x) if block.skip is not None else trunk[0] + x
    qkv = block.qkv(block.norm2(h)).reshape(2, 2, 4, 3, 9)  # (B, head, c, j, HW)
    for head in range(2):
        q, k, v = qkv[:, head, :, 0], qkv[:, head, :, 1], qkv[:, head, :, 2]
        w = torch.softmax(torch.einsum("bcq,bck->bqk", q, k) / 2, dim=2)
        attended.append(torch.einsum("bqk,bck->bcq", w, v))
    a = torch.cat(attended, 1).reshape(2, 8, 3, 3)
    assert torch.allclose(y, block.proj(a) + h, atol=1e-6)


@pytest.mark.parametrize("cls, options", [(SongUNet, {**TINY, **DDPMPP}), (DhariwalUNet, ADM)])
def test_label_dropout_only_in_training(cls, options):
    net = tiny(cls, **options, label_dim=4, label_dropout=0.999999, dropout=0.0)
    x, noise, labels, _ = inputs(4)
    with torch.no_grad():
        eval_out = net(x, noise, labels)
        unconditional = net(x, noise, torch.zeros_like(labels))
        assert not torch.allclose(eval_out, unconditional)
        assert torch.equal(net(x, noise, labels), eval_out)  # eval mode: deterministic, labels kept
        net.train()
        torch.manual_seed(3)
        assert torch.allclose(net(x, noise, labels), unconditional, atol=1e-12)  # training: labels dropped


def test_label_dropout_rate():
    """Whole label rows are zeroed, each with probability label_dropout (binomial standard error)."""
    net = SongUNet(**{**TINY, **DDPMPP}, label_dim=2, label_dropout=0.3).train()
    torch.manual_seed(0)
    kept = _dropped_labels(net, torch.ones(20000, 2), 20000, torch.device("cpu"))
    assert set(kept.unique().tolist()) <= {0.0, 1.0} and torch.equal(kept[:, 0], kept[:, 1])
    assert abs(kept[:, 0].mean().item() - 0.7) < 4 * math.sqrt(0.7 * 0.3 / 20000)


@pytest.mark.parametrize("cls, options", [(SongUNet, {**TINY, **NCSNPP}), (DhariwalUNet, ADM)])
def test_augment_labels_path(cls, options):
    net = tiny(cls, **options, augment_dim=9)
    x, noise, _, augment = inputs(0, 9)
    with torch.no_grad():
        plain = net(x, noise, None)
        assert torch.allclose(net(x, noise, None, torch.zeros_like(augment)), plain, atol=1e-12)  # no bias
        assert not torch.allclose(net(x, noise, None, augment), plain)
        # it adds map_augment(a) (no bias) to the noise embedding, before the first map layer
        seen = []
        net.map_layer0.register_forward_hook(lambda m, args, out: seen.append(args[0]))
        net(x, noise, None, augment)
        net(x, noise, None)
        assert torch.allclose(seen[0] - seen[1], augment @ net.map_augment.weight.t(), atol=1e-12)


def test_broadcast_labels_and_noise():
    """EDM's wrappers pass class_labels (1, label_dim) zeros when none are given, and σ may be a single value."""
    net = tiny(SongUNet, **TINY, **DDPMPP, label_dim=4)
    x, noise, labels, _ = inputs(4)
    with torch.no_grad():
        y = net(x, noise[:1], labels[:1])
        assert torch.allclose(y, net(x, noise[:1].expand(2), labels[:1].expand(2, 4)), atol=1e-12)
        assert torch.allclose(net(x, noise[0], labels[:1]), y, atol=1e-12)


@pytest.mark.parametrize("cls, options", [(SongUNet, {**TINY, **NCSNPP}), (DhariwalUNet, ADM)])
def test_float16_input(cls, options):
    """As under EDM's use_fp16: float32 weights, float16 activations, float32 noise labels."""
    net = tiny(cls, scale=0.05, **options).float()  # larger perturbations overflow float16
    x, noise, _, _ = inputs(dtype=torch.float32)
    with torch.no_grad():
        reference = net(x, noise)
        y = net(x.half(), noise)
    assert y.dtype == torch.float16
    assert ((y.float() - reference).norm() / reference.norm()).item() < 1e-2


def test_gradients_flow():
    net = tiny(SongUNet, **TINY, **NCSNPP).train()
    x, noise, _, _ = inputs()
    x.requires_grad_(True)
    net(x, noise).square().mean().backward()
    assert x.grad is not None and all(p.grad is not None and p.grad.abs().sum() > 0 for p in net.parameters())


def test_validation():
    with pytest.raises(ValueError, match="embedding_type"):
        SongUNet(**TINY, embedding_type="sinusoidal")
    with pytest.raises(ValueError, match="encoder_type"):
        SongUNet(**TINY, encoder_type="input_skip")
    with pytest.raises(ValueError, match="decoder_type"):
        SongUNet(**TINY, decoder_type="residual")
    with pytest.raises(ValueError, match="divisible"):
        SongUNet(**{**TINY, "img_resolution": 6, "channel_mult": [1, 2, 2]})
    with pytest.raises(ValueError, match="label_dropout"):
        DhariwalUNet(**ADM, label_dropout=1.0)
    with pytest.raises(TypeError, match="channel_mult"):
        DhariwalUNet(**{**ADM, "channel_mult": 2})
    with pytest.raises(ValueError, match="up and down"):
        L.Conv2d(3, 3, 3, up=True, down=True)
    with pytest.raises(ValueError, match="init_mode"):
        L.Linear(3, 3, init_mode="orthogonal")
    net = SongUNet(**TINY, label_dim=4)
    with pytest.raises(ValueError, match=r"\(B, 3, H, W\)"):
        net(torch.zeros(2, 1, 8, 8), torch.zeros(2), torch.zeros(2, 4))
    with pytest.raises(ValueError, match="class_labels"):
        net(torch.zeros(2, 3, 8, 8), torch.zeros(2), None)
    with pytest.raises(ValueError, match="noise_labels"):
        net(torch.zeros(2, 3, 8, 8), torch.zeros(3), torch.zeros(2, 4))
