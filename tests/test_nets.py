"""Score networks: shapes, time conditioning, gradients, dropout, and input validation."""
import pytest
import torch

import scoresde as sd


def _small_unet(**kwargs):
    options = dict(channels=8, time_embedding_dim=16)
    options.update(kwargs)
    return sd.nets.UNet(**options)


@pytest.mark.parametrize("shape", [(5, 2), (5, 1, 2), (5, 3, 2)])
def test_mlp_keeps_shape_and_depends_on_time(shape):
    torch.manual_seed(0)
    dim = shape[1] * (shape[2] if len(shape) == 3 else 1)
    net = sd.nets.MLP(dim, hidden=32, depth=2, time_embedding_dim=16)
    x = torch.randn(shape)
    out = net(x, torch.full((5,), 0.2))
    assert out.shape == x.shape
    # Conditioning on t is real: a different t changes every sample's output by a non-negligible amount.
    other = net(x, torch.full((5,), 0.7))
    assert ((out - other).reshape(5, -1).norm(dim=1) > 1e-3 * out.reshape(5, -1).norm(dim=1)).all()
    # A scalar t means the same time for the whole batch.
    torch.testing.assert_close(net(x, 0.2), out)


@pytest.mark.parametrize("in_channels, size, mults, attention", [(1, 8, (1, 2), (4,)), (3, 16, (1, 2, 2), (8,)),
                                                              (1, 32, (1, 1, 2, 2), (8, 4))])
def test_unet_keeps_shape_and_depends_on_time(in_channels, size, mults, attention):
    torch.manual_seed(0)
    net = _small_unet(in_channels=in_channels, image_size=size, channel_mults=mults, attention_resolutions=attention)
    x = torch.randn(3, in_channels, size, size)
    out = net(x, torch.full((3,), 0.1))
    assert out.shape == x.shape and torch.isfinite(out).all()
    other = net(x, torch.full((3,), 0.9))
    assert ((out - other).reshape(3, -1).norm(dim=1) > 1e-3 * out.reshape(3, -1).norm(dim=1)).all()
    # Attention sits at the requested resolutions: one in the middle, plus, at each listed level, after its
    # num_res_blocks = 1 encoder block and its 2 decoder blocks.
    n_attention = sum(type(m).__name__ == "_Attention" for m in net.modules())
    assert n_attention == 1 + 3 * sum(size // 2**level in attention for level in range(len(mults)))


@pytest.mark.parametrize("make", [lambda: sd.nets.MLP(4, hidden=16, depth=2, time_embedding_dim=8),
                                  lambda: _small_unet()], ids=["MLP", "UNet"])
def test_gradients_reach_every_parameter(make):
    torch.manual_seed(0)
    net = make()
    x = torch.randn(4, 4) if isinstance(net, sd.nets.MLP) else torch.randn(4, 1, 8, 8)
    net(x, torch.rand(4)).pow(2).sum().backward()
    for name, p in net.named_parameters():
        assert p.grad is not None and torch.isfinite(p.grad).all(), name
        assert p.grad.abs().sum() > 0, name
    # The Fourier frequencies are a fixed buffer, not trained, but saved with the weights.
    assert not any("frequencies" in name for name, _ in net.named_parameters())
    assert any("frequencies" in name for name in net.state_dict())


def test_unet_input_gradient_is_local_through_the_convolutions():
    # The network mixes pixels (receptive field + attention): the output at one pixel depends on distant inputs.
    torch.manual_seed(0)
    net = _small_unet()
    x = torch.randn(1, 1, 8, 8, requires_grad=True)
    net(x, torch.tensor([0.5]))[0, 0, 0, 0].backward()
    assert x.grad[0, 0, 7, 7].abs() > 0


def test_dropout_is_active_only_in_training():
    torch.manual_seed(0)
    net = _small_unet(dropout=0.5)
    x, t = torch.randn(2, 1, 8, 8), torch.rand(2)
    assert not torch.equal(net(x, t), net(x, t))
    net.eval()
    torch.testing.assert_close(net(x, t), net(x, t), rtol=0, atol=0)


def test_nets_follow_dtype():
    torch.manual_seed(0)
    net = sd.nets.MLP(2, hidden=8, depth=1, time_embedding_dim=4).double()
    assert net(torch.randn(3, 2, dtype=torch.float64), torch.rand(3, dtype=torch.float64)).dtype == torch.float64
    unet = _small_unet().double()
    assert unet(torch.randn(2, 1, 8, 8, dtype=torch.float64), torch.rand(2)).dtype == torch.float64


def test_invalid_arguments_raise():
    with pytest.raises(ValueError, match=r"\(B, 3\)"):
        sd.nets.MLP(3)(torch.randn(4, 2), torch.rand(4))
    with pytest.raises(ValueError, match=r"\(B, 1, 8, 8\).*\(4, 1, 16, 16\)"):
        _small_unet()(torch.randn(4, 1, 16, 16), torch.rand(4))
    with pytest.raises(ValueError, match="divisible"):
        sd.nets.UNet(image_size=6, channel_mults=(1, 2, 2))
    with pytest.raises(ValueError, match="even"):
        sd.nets.MLP(2, time_embedding_dim=7)
    with pytest.raises(ValueError, match="dropout"):
        sd.nets.UNet(dropout=1.5)
    with pytest.raises(ValueError, match=r"\(B,\)"):
        sd.nets.MLP(2)(torch.randn(4, 2), torch.rand(3))


# -- class-conditional nets and the classifier -----------------------------------------------------------------
CONDITIONAL = {
    "mlp": (lambda: sd.nets.MLP(2, hidden=16, depth=1, time_embedding_dim=8, num_classes=3), (2,)),
    "unet": (lambda: sd.nets.UNet(channels=8, time_embedding_dim=16, num_classes=3), (1, 8, 8)),
}


@pytest.mark.parametrize("kind", sorted(CONDITIONAL))
def test_conditional_nets_depend_on_the_label_and_need_it(kind):
    make, shape = CONDITIONAL[kind]
    torch.manual_seed(0)
    net = make().eval()
    x, t = torch.randn((4,) + shape), torch.full((4,), 0.3)
    outs = [net(x, t, torch.full((4,), c)) for c in range(4)]          # 0, 1, 2 and ∅ = 3
    assert all(o.shape == x.shape for o in outs)
    assert all(not torch.allclose(outs[a], outs[b]) for a in range(4) for b in range(a))
    mixed = net(x, t, torch.tensor([0, 1, 2, 3]))
    for row in range(4):                                               # each row follows its own label
        torch.testing.assert_close(mixed[row], outs[row][row])
    with pytest.raises(ValueError, match="needs cond"):
        net(x, t)
    with pytest.raises(ValueError, match=r"0 … 2, or 3 for no label"):
        net(x, t, torch.tensor([0, 1, 2, 4]))
    with pytest.raises(ValueError, match="unconditional"):
        sd.nets.MLP(2)(torch.randn(4, 2), t, torch.zeros(4, dtype=torch.long))


def test_score_model_passes_the_label_to_every_output():
    sde = sd.VPSDE()
    torch.manual_seed(0)
    model = sd.ScoreModel(CONDITIONAL["mlp"][0](), sde, parameterization="v")
    assert model.num_classes == 3 and sd.ScoreModel(sd.nets.MLP(2), sde).num_classes is None
    x, t, cond = torch.randn(5, 2), torch.full((5,), 0.4), torch.tensor([0, 1, 2, 3, 1])
    score = model(x, t, cond)
    s, sigma = sde.scale(t)[:, None], sde.std(t)[:, None]
    torch.testing.assert_close(model.eps(x, t, cond), -sigma * score)
    torch.testing.assert_close(model.denoise(x, t, cond), (x + sigma**2 * score) / s)
    torch.testing.assert_close(model.net_output_to_score(model.net_output(x, t, cond), x, t), score)
    assert not torch.allclose(model(x, t, torch.zeros(5, dtype=torch.long)), score)
    with pytest.raises(ValueError, match="needs cond"):
        model(x, t)


def test_classifier_returns_normalised_log_probabilities():
    torch.manual_seed(0)
    clf = sd.nets.Classifier(64, 10, hidden=16, depth=1)
    x = torch.randn(6, 1, 8, 8)
    log_probs = clf(x, torch.rand(6))
    assert log_probs.shape == (6, 10)
    torch.testing.assert_close(log_probs.exp().sum(1), torch.ones(6))
    assert not torch.allclose(clf(x, torch.zeros(6)), clf(x, torch.ones(6)))
    with pytest.raises(ValueError, match="num_classes must be an integer >= 2"):
        sd.nets.Classifier(2, 1)
