"""FIR up/down-sampling (scoresde.nets.fir) against a direct reference: zero insertion, zero padding and a plain
2-D convolution with the flipped kernel, one channel at a time."""
import pytest
import torch
from torch.nn import functional as F

from scoresde.nets import fir

KERNELS = [(1, 3, 3, 1), (1, 1), (1, 2, 1), (1, 4, 6, 4, 1), [[1, 2], [3, 4]]]


def reference_upfirdn2d(x, kernel, up, down, pad0, pad1):
    """upfirdn2d written out: insert up−1 zeros after each sample, pad (negative crops), correlate with the
    flipped kernel ('valid'), keep every down-th sample."""
    n, c, h, w = x.shape
    u = torch.zeros(n, c, h * up, w * up, dtype=x.dtype)
    u[:, :, ::up, ::up] = x
    u = F.pad(u, (pad0, pad1, pad0, pad1))
    flipped = kernel.flip(0, 1)[None, None].to(x.dtype)
    y = torch.cat([F.conv2d(u[:, i:i + 1], flipped) for i in range(c)], dim=1)
    return y[:, :, ::down, ::down]


def taps_2d(k):
    k = torch.tensor(k, dtype=torch.float64)
    k = torch.outer(k, k) if k.dim() == 1 else k
    return k / k.sum()


@pytest.mark.parametrize("k", KERNELS)
@pytest.mark.parametrize("factor", [1, 2, 3])
@pytest.mark.parametrize("gain", [1.0, 0.5])
def test_upsample_and_downsample_match_the_reference(k, factor, gain):
    torch.manual_seed(0)
    x = torch.randn(2, 3, 6, 9, dtype=torch.float64)
    kernel = taps_2d(k)
    p = kernel.shape[0] - factor
    up = fir.upsample_2d(x, k, factor, gain)
    expected = reference_upfirdn2d(x, kernel * gain * factor ** 2, factor, 1, (p + 1) // 2 + factor - 1, p // 2)
    assert up.shape == (2, 3, 6 * factor, 9 * factor)
    torch.testing.assert_close(up, expected, rtol=1e-12, atol=1e-12)
    x = x[..., : 6 // factor * factor, : 9 // factor * factor]
    down = fir.downsample_2d(x, k, factor, gain)
    expected = reference_upfirdn2d(x, kernel * gain, 1, factor, (p + 1) // 2, p // 2)
    assert down.shape == (2, 3, x.shape[2] // factor, x.shape[3] // factor)
    torch.testing.assert_close(down, expected, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("up, down, pad", [(1, 1, (0, 0)), (2, 1, (2, 1)), (3, 2, (1, 3)), (2, 2, (-1, 2)),
                                           (1, 2, (3, 3)), (2, 1, (1, -1)), (3, 1, (0, 0))])
def test_upfirdn2d_matches_the_reference_for_any_pads(up, down, pad):
    torch.manual_seed(1)
    x = torch.randn(2, 2, 5, 7, dtype=torch.float64)
    kernel = torch.randn(3, 3, dtype=torch.float64)  # asymmetric: catches a missing flip
    out = fir.upfirdn2d(x, kernel, up, down, pad)
    torch.testing.assert_close(out, reference_upfirdn2d(x, kernel, up, down, *pad), rtol=1e-12, atol=1e-12)


def test_kernel_is_normalised_separable_and_gain_scaled():
    kernel = fir.fir_kernel((1, 3, 3, 1), gain=4.0, dtype=torch.float64)
    k = torch.tensor([1.0, 3, 3, 1], dtype=torch.float64) / 8
    torch.testing.assert_close(kernel, 4.0 * torch.outer(k, k))
    torch.testing.assert_close(fir.fir_kernel(None, factor=3, dtype=torch.float64), torch.full((3, 3), 1 / 9,
                                                                                               dtype=torch.float64))


@pytest.mark.parametrize("k", [(1, 3, 3, 1), (1, 2, 1)])
def test_constant_images_keep_their_value_inside(k):
    x = torch.full((1, 2, 8, 8), 0.7, dtype=torch.float64)
    torch.testing.assert_close(fir.upsample_2d(x, k)[..., 3:-3, 3:-3], torch.full((1, 2, 10, 10), 0.7,
                                                                                     dtype=torch.float64))
    torch.testing.assert_close(fir.downsample_2d(x, k)[..., 1:-1, 1:-1], torch.full((1, 2, 2, 2), 0.7,
                                                                                       dtype=torch.float64))


def test_box_kernel_is_nearest_neighbour_and_average_pooling():
    torch.manual_seed(2)
    x = torch.randn(2, 3, 4, 6, dtype=torch.float64)
    torch.testing.assert_close(fir.upsample_2d(x, (1, 1)), F.interpolate(x, scale_factor=2.0, mode="nearest"))
    torch.testing.assert_close(fir.upsample_2d(x, (1, 1)), fir.naive_upsample_2d(x))
    torch.testing.assert_close(fir.downsample_2d(x, (1, 1)), F.avg_pool2d(x, 2))
    torch.testing.assert_close(fir.naive_downsample_2d(x), F.avg_pool2d(x, 2))


@pytest.mark.parametrize("k", [(1, 3, 3, 1), (1, 1), (1, 2, 1)])
def test_fused_conv_resampling_equals_the_unfused_ops_away_from_the_border(k):
    """upsample_conv_2d = conv3x3(upsample_2d(x)) and conv_downsample_2d = downsample_2d(conv3x3(x)), up to the
    border, where the fused ops pad once instead of twice."""
    torch.manual_seed(3)
    x = torch.randn(2, 3, 8, 8, dtype=torch.float64)
    w = torch.randn(4, 3, 3, 3, dtype=torch.float64)
    up = fir.upsample_conv_2d(x, w, k)
    unfused = F.conv2d(fir.upsample_2d(x, k), w, padding=1)
    assert up.shape == (2, 4, 16, 16)
    torch.testing.assert_close(up[..., 2:-2, 2:-2], unfused[..., 2:-2, 2:-2])
    down = fir.conv_downsample_2d(x, w, k)
    assert down.shape == (2, 4, 4, 4)
    torch.testing.assert_close(down[..., 1:-1, 1:-1], fir.downsample_2d(F.conv2d(x, w, padding=1), k)[..., 1:-1, 1:-1])


def test_fir_conv2d_module_parameters_and_modes():
    torch.manual_seed(4)
    conv = fir.FIRConv2d(3, 5, 3, up=True).double()
    assert [n for n, _ in conv.named_parameters()] == ["weight", "bias"]
    assert conv.weight.shape == (5, 3, 3, 3) and conv.bias.shape == (5,)
    with torch.no_grad():
        conv.weight.normal_(), conv.bias.normal_()
    x = torch.randn(2, 3, 4, 4, dtype=torch.float64)
    torch.testing.assert_close(conv(x), fir.upsample_conv_2d(x, conv.weight, (1, 3, 3, 1)) + conv.bias[:, None, None])
    conv.up, conv.down = False, True
    assert conv(x).shape == (2, 5, 2, 2)
    conv.down = False
    torch.testing.assert_close(conv(x), F.conv2d(x, conv.weight, conv.bias, padding=1))


def test_gradients_and_device_dtype():
    torch.manual_seed(5)
    x = torch.randn(1, 2, 4, 4, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(lambda v: fir.upsample_2d(v, (1, 3, 3, 1)), (x,))
    assert torch.autograd.gradcheck(lambda v: fir.downsample_2d(v, (1, 2, 1)), (x,))
    assert fir.upsample_2d(torch.randn(1, 1, 2, 2), (1, 3, 3, 1)).dtype == torch.float32
    assert fir.downsample_2d(torch.randn(1, 1, 4, 4, dtype=torch.float64)).dtype == torch.float64


def test_errors_name_what_was_expected():
    with pytest.raises(ValueError, match="4-D"):
        fir.upsample_2d(torch.zeros(3, 4, 4))
    with pytest.raises(ValueError, match="factor"):
        fir.downsample_2d(torch.zeros(1, 1, 4, 4), factor=0)
    with pytest.raises(ValueError, match="sum to zero"):
        fir.fir_kernel((1, -1))
    with pytest.raises(ValueError, match="square"):
        fir.fir_kernel([[1, 2, 3], [1, 2, 3]])
    with pytest.raises(ValueError, match="in_C = 3"):
        fir.upsample_conv_2d(torch.zeros(1, 3, 4, 4), torch.zeros(2, 4, 3, 3))
    with pytest.raises(ValueError, match="not both"):
        fir.FIRConv2d(2, 2, 3, up=True, down=True)
