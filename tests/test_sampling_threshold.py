"""Thresholding of x̂_0: the two rules' formulas, that every sampler taking ``threshold=`` applies it at every score
evaluation (the final denoising returns a thresholded x̂_0, so within the bound), that a threshold that never
binds changes nothing but rounding, and that the samplers without an x0 step refuse it. diffusers' own full-loop
thresholding test is reproduced in tests/test_interop.py."""
import pytest
import torch

import scoresde as sd

F64 = torch.float64
TAKERS = [name for name in sd.SAMPLERS.names() if sd.SAMPLERS.get(name)[0].takes_threshold]


def test_clip_and_dynamic_threshold_formulas():
    """Clip: clamp to ±m. Dynamic (Imagen): per sample s = clamp(quantile(|x|, r), 1, m), clamp to ±s, divide by s;
    a sample whose quantile is below 1 is only clipped to ±1; with m < 1, s = m (torch's clamp, as diffusers')."""
    g = torch.Generator().manual_seed(0)
    x = torch.randn(3, 2, 4, 4, generator=g, dtype=F64) * torch.tensor([0.3, 2.0, 10.0], dtype=F64)[:, None, None, None]
    torch.testing.assert_close(sd.ClipThreshold(1.5)(x), x.clamp(-1.5, 1.5))
    out = sd.DynamicThreshold(ratio=0.9, max_value=4.0)(x)
    for b in range(3):
        s = min(max(float(torch.quantile(x[b].abs().flatten(), 0.9)), 1.0), 4.0)
        torch.testing.assert_close(out[b], x[b].clamp(-s, s) / s)
    assert float(out.abs().max()) <= 1.0
    torch.testing.assert_close(sd.DynamicThreshold(0.9, 0.5)(x), x.clamp(-0.5, 0.5) / 0.5)
    for bad in (0, -1.0, float("inf"), True):
        with pytest.raises(ValueError, match="max_value"):
            sd.ClipThreshold(bad)
    for bad in (0, 1.5, True):
        with pytest.raises(ValueError, match="ratio"):
            sd.DynamicThreshold(ratio=bad)


def wide_mixture():
    """Two components at ±(2, 2) with std 0.1: the exact x̂_0 reaches |x| ≈ 2, well past a bound of 1."""
    return sd.GaussianMixture(torch.tensor([[2.0, 2.0], [-2.0, -2.0]], dtype=F64), stds=0.1)


def run(sampler, gmm, sde, seed=0):
    x_T = torch.randn(64, 2, generator=torch.Generator().manual_seed(seed), dtype=F64)
    return sampler.sample(sde, gmm.score(sde), (64, 2), x_T=x_T, generator=torch.Generator().manual_seed(seed + 1))


@pytest.mark.parametrize("name", TAKERS)
def test_every_sampler_that_takes_a_threshold_applies_it_to_every_x0(name):
    """With denoise=True the result is the thresholded x̂_0 of the last evaluation, so it lies in [−1, 1] exactly,
    where without the threshold the samples reach ±2; a bound of 1e6 never binds and gives the same samples up to
    the round trip score → x̂_0 → score (1e-9)."""
    cls, fixed = sd.SAMPLERS.get(name)
    gmm, sde = wide_mixture(), sd.VPSDE()
    plain = run(cls.example(**fixed, denoise=True), gmm, sde).x
    assert float(plain.abs().max()) > 1.5
    for threshold in (sd.ClipThreshold(1.0), sd.DynamicThreshold(0.995, 1.0)):
        clipped = run(cls.example(**fixed, denoise=True, threshold=threshold), gmm, sde).x
        assert float(clipped.abs().max()) <= 1.0 + 1e-12
    loose = run(cls.example(**fixed, denoise=True, threshold=sd.ClipThreshold(1e6)), gmm, sde)
    torch.testing.assert_close(loose.x, plain, rtol=1e-9, atol=1e-9)


def test_the_guided_network_count_is_kept_and_samplers_without_an_x0_step_refuse():
    gmm, sde = wide_mixture(), sd.VPSDE()
    guided = sd.Score(gmm.score(sde), network_evaluations=2)
    res = sd.DPMSolver(steps=4, threshold=sd.ClipThreshold()).sample(
        sde, guided, (8, 2), generator=torch.Generator().manual_seed(0))
    assert res.nfe == 4 and res.network_evaluations == 8
    for cls in (sd.PCSampler, sd.ReverseSDESampler, sd.ProbabilityFlowSampler):
        with pytest.raises(TypeError, match="forms no x0 prediction.*DDIMSampler, DEISSampler, DPMSolver"):
            cls(threshold=sd.ClipThreshold())
    with pytest.raises(TypeError, match="ClipThreshold"):
        sd.DPMSolver(threshold=1.0)


def test_a_thresholded_score_keeps_what_the_score_says_about_itself():
    # e.g. iDDPM's round_noise_level, which Heun's churn needs (from_edm sets it)
    from scoresde.sampling.threshold import thresholded_score

    snap = lambda level: torch.round(level)                       # noqa: E731
    score = sd.Score(lambda x, t: -x, network_evaluations=2, round_noise_level=snap)
    wrapped = thresholded_score(sd.VPSDE(), score, sd.ClipThreshold(1.0))
    assert wrapped.round_noise_level is snap and wrapped.network_evaluations == 2
