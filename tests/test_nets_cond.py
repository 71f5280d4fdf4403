"""Nets conditioned on a vector (``cond_dim``) or an image (``cond_channels``): shapes, the learned null condition,
backward compatibility of the unconditional and class-conditional nets, and the errors."""
import pytest
import torch

import scoresde as sd

B = 3


def _mlp(**kwargs):
    return sd.nets.MLP(2, hidden=16, depth=1, time_embedding_dim=8, **kwargs)


def _unet(**kwargs):
    return sd.nets.UNet(channels=8, time_embedding_dim=16, **kwargs)


def _conditions(net, generator):
    """Random keyword conditions for ``net``: cond (labels or vectors) and/or image, as ``net`` declares them."""
    out = {}
    if net.num_classes is not None:
        out["cond"] = torch.randint(0, net.num_classes, (B,), generator=generator)
    if net.cond_dim is not None:
        out["cond"] = torch.randn(B, net.cond_dim, generator=generator)
    if getattr(net, "cond_channels", None) is not None:
        out["image"] = torch.randn(B, net.cond_channels, 8, 8, generator=generator)
    return out


NETS = {
    "mlp-vector": lambda: _mlp(cond_dim=4),
    "unet-vector": lambda: _unet(cond_dim=4),
    "unet-image": lambda: _unet(cond_channels=2),
    "unet-image+labels": lambda: _unet(cond_channels=2, num_classes=3),
    "unet-image+vector": lambda: _unet(cond_channels=1, cond_dim=5),
}


def _inputs(net, generator):
    shape = (B, 2) if isinstance(net, sd.nets.MLP) else (B, 1, 8, 8)
    return torch.randn(shape, generator=generator), torch.rand(B, generator=generator)


@pytest.mark.parametrize("kind", sorted(NETS))
def test_conditions_keep_shape_and_change_the_output(kind):
    torch.manual_seed(0)
    net = NETS[kind]().eval()
    g = torch.Generator().manual_seed(1)
    x, t = _inputs(net, g)
    first, second = _conditions(net, g), _conditions(net, g)
    if net.num_classes is not None:                               # another label in every row
        second["cond"] = (first["cond"] + 1) % net.num_classes
    out = net(x, t, **first)
    assert out.shape == x.shape and torch.isfinite(out).all()
    # Same condition, same computation: bitwise equal. Another condition moves every sample.
    assert torch.equal(net(x, t, **first), out)
    for name in first:                       # each condition on its own changes the output
        other = net(x, t, **{**first, name: second[name]})
        assert ((other - out).reshape(B, -1).norm(dim=1) > 1e-3 * out.reshape(B, -1).norm(dim=1)).all(), name


def test_vector_condition_is_per_row():
    torch.manual_seed(0)
    net = _mlp(cond_dim=3).eval()
    x, t = torch.randn(2, 2), torch.rand(2)
    a, b = torch.randn(1, 3), torch.randn(1, 3)
    mixed = net(x, t, torch.cat([a, b]))
    # The rows of a batch are independent; batched matmuls may round differently from single rows, so compare to
    # float32 precision (a few ε = 1.2e-7 relative through three small layers).
    torch.testing.assert_close(mixed[0], net(x[:1], t[:1], a)[0])
    torch.testing.assert_close(mixed[1], net(x[1:], t[1:], b)[0])


def test_null_cond_and_attributes():
    torch.manual_seed(0)
    assert _mlp().null_cond is None and _unet().null_cond is None
    assert _mlp(num_classes=3).null_cond == 3 and _unet(num_classes=3).null_cond == 3
    for net in (_mlp(), _unet(), _mlp(num_classes=3)):
        assert net.cond_dim is None
    assert _unet().cond_channels is None and _unet(num_classes=3).cond_channels is None

    vector = _mlp(cond_dim=4)
    assert vector.num_classes is None and vector.cond_dim == 4
    assert isinstance(vector.null_cond, torch.nn.Parameter) and vector.null_cond.shape == (4,)
    assert any(p is vector.null_cond for p in vector.parameters())
    assert vector.null_cond.abs().sum() > 0                      # randn: apart from the zero vector

    image = _unet(cond_channels=2)
    assert image.cond_channels == 2 and image.cond_dim is None and image.num_classes is None
    assert set(image.null_cond) == {"image"} and image.null_cond["image"].shape == (2, 1, 1)
    assert any(p is image.null_cond["image"] for p in image.parameters())

    both = _unet(cond_channels=2, num_classes=3)
    assert both.null_cond["cond"] == 3 and both.null_cond["image"] is both.null_image
    both = _unet(cond_channels=2, cond_dim=4)
    assert both.null_cond["cond"] is both.vectors.null and both.null_cond["image"].shape == (2, 1, 1)
    # The nulls are valid conditions: the net runs on them (broadcast to the batch) like on any other.
    x = torch.randn(B, 1, 8, 8)
    out = both(x, torch.rand(B), cond=both.null_cond["cond"].expand(B, 4),
               image=both.null_cond["image"].expand(B, 2, 8, 8))
    assert out.shape == x.shape
    with pytest.raises(AttributeError):
        vector.null_cond = None


@pytest.mark.parametrize("kind", ["mlp-vector", "unet-image+vector"])
def test_gradient_reaches_the_null_through_where(kind):
    torch.manual_seed(0)
    net = NETS[kind]()
    g = torch.Generator().manual_seed(2)
    x, t = _inputs(net, g)
    conditions = _conditions(net, g)
    drop = torch.tensor([True, False, True])
    nulls = net.null_cond if isinstance(net.null_cond, dict) else {"cond": net.null_cond}
    dropped = {name: torch.where(drop.reshape(-1, *[1] * (value.dim() - 1)), nulls[name].expand_as(value), value)
               for name, value in conditions.items()}
    net(x, t, **dropped).pow(2).sum().backward()
    for name, null in nulls.items():
        assert null.grad is not None and torch.isfinite(null.grad).all() and null.grad.abs().sum() > 0, name
    # No row dropped: the null receives no gradient at all.
    net.zero_grad(set_to_none=True)
    net(x, t, **conditions).pow(2).sum().backward()
    assert all(null.grad is None or not null.grad.any() for null in nulls.values())


# -- backward compatibility: the nets without cond_dim / cond_channels are built exactly as before --------------
# Recorded from the code before cond_dim / cond_channels existed: after torch.manual_seed(0) and the build, the
# number of state_dict entries, the next three torch.randn draws (the same number of RNG draws was consumed), and
# Σ|w| over the state_dict in float64 (the same values). Σ|w| adds ~10³ float32 values exactly representable in
# float64; only the order of the double additions inside .sum() may differ between CPU kernels (~1e-16 relative),
# and the normal draws of ≥ 16 elements go through a vectorized Box–Muller, so the bound is float32's 1e-6.
RECORDED = {
    "mlp": (lambda: _mlp(), 15, [-0.45973068475723267, 1.1933892965316772, -0.24197082221508026],
            146.38855505519314),
    "mlp-labels": (lambda: _mlp(num_classes=3), 16, [-0.9676069021224976, 0.7653718590736389, -0.2683637738227844],
                   168.90804414608283),
    "unet": (lambda: _unet(), 129, [1.3384612798690796, 0.6566833853721619, -0.6933597326278687],
             3041.6358067183737),
    "unet-labels": (lambda: _unet(num_classes=3), 130,
                    [0.048270177096128464, -1.0007072687149048, -0.08303050696849823], 3093.772722595835),
}


@pytest.mark.parametrize("kind", sorted(RECORDED))
def test_existing_nets_are_built_as_before(kind):
    make, n_keys, probe, abs_sum = RECORDED[kind]
    torch.manual_seed(0)
    net = make()
    next_draws = torch.randn(3)
    state = net.state_dict()
    assert len(state) == n_keys
    assert not any(key.startswith(("vectors", "null_image")) for key in state)
    torch.testing.assert_close(next_draws, torch.tensor(probe))
    assert sum(v.double().abs().sum().item() for v in state.values()) == pytest.approx(abs_sum, rel=1e-6)
    # And the same seed builds the same net (bitwise), key for key in the same order.
    torch.manual_seed(0)
    again = make().state_dict()
    assert list(again) == list(state) and all(torch.equal(again[k], state[k]) for k in state)


@pytest.mark.parametrize("net_kind, make_plain, make_cond", [
    ("mlp", lambda: _mlp(), lambda: _mlp(cond_dim=4)),
    ("unet", lambda: _unet(), lambda: _unet(cond_dim=4)),
    ("unet-labels", lambda: _unet(num_classes=3), lambda: _unet(num_classes=3, cond_channels=2))])
def test_new_parameters_come_last(net_kind, make_plain, make_cond):
    # Created after the existing modules, the new ones leave the earlier RNG draws alone. (state_dict lists a
    # module's own parameters before its children's, so its order is not the order of creation: compare names.)
    torch.manual_seed(0)
    plain = make_plain().state_dict()
    torch.manual_seed(0)
    cond = make_cond().state_dict()
    assert set(plain) <= set(cond)
    new = set(cond) - set(plain)
    if net_kind == "unet-labels":
        assert new == {"null_image"}
        # The image widens the first convolution (C + C' input channels); everything before it is unchanged.
        assert cond["input.weight"].shape == (8, 1 + 2, 3, 3)
        before = list(plain)[:list(plain).index("input.weight")]
        assert all(torch.equal(cond[k], plain[k]) for k in before)
    else:
        assert new == {"vectors.mapping.0.weight", "vectors.mapping.0.bias", "vectors.mapping.2.weight",
                       "vectors.mapping.2.bias", "vectors.null"}
        assert all(torch.equal(cond[k], plain[k]) for k in plain)


# -- errors ------------------------------------------------------------------------------------------------------
def test_constructor_errors():
    with pytest.raises(ValueError, match="num_classes and cond_dim exclude each other"):
        _mlp(num_classes=3, cond_dim=2)
    with pytest.raises(ValueError, match="num_classes and cond_dim exclude each other"):
        _unet(num_classes=3, cond_dim=2, cond_channels=1)
    for bad in (0, -1, 2.5, True, "3"):
        with pytest.raises(ValueError, match=r"cond_dim must be a positive integer; got"):
            _mlp(cond_dim=bad)
        with pytest.raises(ValueError, match=r"cond_channels must be a positive integer; got"):
            _unet(cond_channels=bad)
    with pytest.raises(TypeError):
        _mlp(cond_channels=1)                                      # images are the U-Net's only


@pytest.mark.parametrize("make", [lambda: _mlp(cond_dim=4), lambda: _unet(cond_dim=4, cond_channels=1)],
                         ids=["MLP", "UNet"])
def test_vector_cond_errors(make):
    torch.manual_seed(0)
    net = make()
    x, t = _inputs(net, torch.Generator().manual_seed(0))
    extra = {} if isinstance(net, sd.nets.MLP) else {"image": torch.zeros(B, 1, 8, 8)}
    with pytest.raises(ValueError, match=r"needs cond.*\(B, 4\) floating"):
        net(x, t, **extra)
    with pytest.raises(ValueError, match=r"\(B, cond_dim\) = \(3, 4\).*got \(3, 5\)"):
        net(x, t, torch.randn(B, 5), **extra)
    with pytest.raises(ValueError, match=r"\(B, cond_dim\) = \(3, 4\).*got \(2, 4\)"):
        net(x, t, torch.randn(2, 4), **extra)
    with pytest.raises(ValueError, match=r"\(B, cond_dim\) = \(3, 4\).*got \(4,\)"):
        net(x, t, torch.randn(4), **extra)
    with pytest.raises(TypeError, match=r"floating tensor.*not class indices.*torch.int64"):
        net(x, t, torch.zeros(B, 4, dtype=torch.long), **extra)
    with pytest.raises(TypeError, match=r"floating tensor.*got list"):
        net(x, t, [[0.0] * 4] * B, **extra)


def test_label_and_unconditional_cond_errors():
    torch.manual_seed(0)
    x, t = torch.randn(B, 1, 8, 8), torch.rand(B)
    with pytest.raises(TypeError, match="integer class indices"):
        _unet(num_classes=3)(x, t, torch.zeros(B))
    with pytest.raises(ValueError, match=r"takes no cond \(unconditional.*num_classes=K.*cond_dim=D"):
        _unet(cond_channels=1)(x, t, torch.zeros(B, 4), image=torch.zeros(B, 1, 8, 8))
    with pytest.raises(ValueError, match=r"takes no cond \(unconditional"):
        _mlp()(torch.randn(B, 2), t, torch.randn(B, 4))


def test_image_errors():
    torch.manual_seed(0)
    net = _unet(cond_channels=2)
    x, t = torch.randn(B, 1, 8, 8), torch.rand(B)
    with pytest.raises(ValueError, match=r"cond_channels=2\) and needs image.*\(3, 2, 8, 8\)"):
        net(x, t)
    with pytest.raises(ValueError, match=r"image must have shape \(B, C', H, W\) = \(3, 2, 8, 8\).*got \(3, 1, 8, 8\)"):
        net(x, t, image=torch.randn(B, 1, 8, 8))
    with pytest.raises(ValueError, match=r"= \(3, 2, 8, 8\).*got \(3, 2, 4, 4\)"):
        net(x, t, image=torch.randn(B, 2, 4, 4))
    with pytest.raises(ValueError, match=r"= \(3, 2, 8, 8\).*got \(1, 2, 8, 8\)"):
        net(x, t, image=torch.randn(1, 2, 8, 8))
    with pytest.raises(TypeError, match=r"image must be a tensor"):
        net(x, t, image=[0.0])
    with pytest.raises(ValueError, match=r"no image condition \(cond_channels=None\).*cond_channels=C'"):
        _unet()(x, t, image=torch.randn(B, 2, 8, 8))
    with pytest.raises(ValueError, match=r"needs cond"):                      # both conditions are required
        _unet(cond_channels=2, num_classes=3)(x, t, image=torch.randn(B, 2, 8, 8))


def test_float64_nets():
    torch.manual_seed(0)
    g = torch.Generator().manual_seed(3)
    for make in NETS.values():
        net = make().double()
        x, t = _inputs(net, g)
        conditions = _conditions(net, g)
        out = net(x.double(), t.double(), **conditions)                       # float32 conditions are cast
        assert out.dtype == torch.float64 and torch.isfinite(out).all()
        doubled = {k: v.double() if v.is_floating_point() else v for k, v in conditions.items()}
        assert torch.equal(net(x.double(), t.double(), **doubled), out)
        nulls = net.null_cond if isinstance(net.null_cond, dict) else {"cond": net.null_cond}
        assert all(n.dtype == torch.float64 for n in nulls.values() if torch.is_tensor(n))


def test_registry_builds_conditional_nets():
    torch.manual_seed(0)
    net = sd.nets.NETS.build("unet", channels=8, time_embedding_dim=16, cond_dim=2, cond_channels=1)
    assert net.cond_dim == 2 and net.cond_channels == 1
