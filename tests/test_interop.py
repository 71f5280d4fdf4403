"""Models of other libraries' conventions as scores: an EDM denoiser and a flow-matching velocity, built from the
oracle in their own variables, give the oracle's exact score on every linear SDE."""
import pytest
import torch

import scoresde as sd
from helpers import F64

SDES = [sd.VPSDE(), sd.VESDE(), sd.SubVPSDE(), sd.CosineVPSDE(), sd.RectifiedFlowSDE(), sd.EDMSDE()]
IDS = ["VP", "VE", "subVP", "cosine", "rectified_flow", "EDM"]


def points(sde, n=32, seed=0):
    g = torch.Generator().manual_seed(seed)
    t = sde.T * (0.01 + 0.98 * torch.rand(n, generator=g, dtype=F64))
    x0 = sd.eight_gaussians().sample(n, g)
    return sde.sample_marginal(x0, t, generator=g)[0], t


@pytest.mark.parametrize("sde", SDES, ids=IDS)
def test_an_edm_denoiser_gives_the_exact_score_on_any_sde(sde):
    """D(x̃, σ̃) = E[x_0 | x_0 + σ̃ n = x̃] is the oracle's Tweedie denoiser on EDM's process at t = σ̃; through
    from_denoiser it must be the oracle's score on the other SDE (x̃ = x/s, σ̃ = σ/s)."""
    gmm, edm = sd.eight_gaussians(), sd.EDMSDE(sigma_max=1e4)
    calls = []

    def denoiser(x_tilde, sigma_tilde):
        calls.append(sigma_tilde)
        return gmm.denoiser(edm)(x_tilde, sigma_tilde)

    x, t = points(sde)
    score = sd.from_denoiser(denoiser, sde)
    torch.testing.assert_close(score(x, t), gmm.score(sde)(x, t), rtol=1e-8, atol=1e-8)
    torch.testing.assert_close(calls[0], sde.std(t) / sde.scale(t))


@pytest.mark.parametrize("sde", SDES, ids=IDS)
def test_as_denoiser_is_the_exact_edm_denoiser_and_inverts_from_denoiser(sde):
    """as_denoiser(sde, exact score)(x̃, σ̃) is E[x_0 | x_0 + σ̃ n = x̃], the oracle's denoiser on EDM's process at
    t = σ̃, on every SDE; through from_denoiser it gives the score back. Both are float64 formulas of the same
    quantities, so 1e-8 allows the inverse-log-SNR lookup (the tabulated t(σ̃) of a numerical SDE) and no more."""
    gmm, edm = sd.eight_gaussians(), sd.EDMSDE(sigma_max=1e4)
    x, t = points(sde)
    level = sde.std(t) / sde.scale(t)
    x_tilde = x / sde.scale(t)[:, None]
    denoiser = sd.as_denoiser(sde, gmm.score(sde))
    torch.testing.assert_close(denoiser(x_tilde, level), gmm.denoiser(edm)(x_tilde, level), rtol=1e-8, atol=1e-8)
    back = sd.from_denoiser(denoiser, sde)
    torch.testing.assert_close(back(x, t), gmm.score(sde)(x, t), rtol=1e-8, atol=1e-8)
    with pytest.raises(TypeError, match="score must be a callable"):
        sd.as_denoiser(sde, 3)


@pytest.mark.parametrize("sde", SDES, ids=IDS)
def test_a_velocity_field_gives_the_exact_score(sde):
    """u(x, t) = E[ṡ x_0 + σ̇ z | x_t] from the mixture posterior (ṡ, σ̇ by central differences) → the exact score."""
    gmm = sd.eight_gaussians()
    x, t = points(sde)
    h = 1e-6 * sde.T
    s_dot = (sde.scale(t + h) - sde.scale(t - h)) / (2 * h)
    sigma_dot = (sde.std(t + h) - sde.std(t - h)) / (2 * h)

    def velocity(x, t):
        s, sigma = sde.scale(t)[:, None], sde.std(t)[:, None]
        x0 = gmm.denoiser(sde)(x, t)
        return s_dot[:, None] * x0 + sigma_dot[:, None] * (x - s * x0) / sigma

    torch.testing.assert_close(sd.from_velocity(velocity, sde)(x, t), gmm.score(sde)(x, t), rtol=1e-5, atol=1e-5)


def test_rectified_flow_velocity_is_z_minus_x0_and_samples_the_oracle():
    """On rectified flow the velocity of a point mass x_0 is z − x_0 = (x_t − x_0)/t; the mixture's exact velocity
    through from_velocity samples the eight Gaussians (the check of tests/helpers.py)."""
    from helpers import assert_oracle_law

    sde, gmm = sd.RectifiedFlowSDE(), sd.eight_gaussians()

    def velocity(x, t):
        x0 = gmm.denoiser(sde)(x, t)
        return (x - x0) / t[:, None]                         # E[z − x_0 | x_t] with z = (x_t − (1 − t) x_0)/t

    res = sd.DPMSolver(25, order=2).sample(sde, sd.from_velocity(velocity, sde), (1000, 2), dtype=F64,
                                           generator=torch.Generator().manual_seed(0))
    assert_oracle_law(res.x, gmm, key="8g")


def test_labels_pass_through_and_errors():
    sde = sd.VPSDE()
    x, t = points(sde, n=4)
    seen = []
    score = sd.from_denoiser(lambda x, sigma, cond: seen.append(cond) or x, sde, cond=torch.tensor([1, 2, 3, 0]))
    score(x, t)
    assert seen[0].tolist() == [1, 2, 3, 0]
    with pytest.raises(TypeError, match="callable"):
        sd.from_velocity(3, sde)
    with pytest.raises(ValueError, match="must return a tensor of x.s shape"):
        sd.from_denoiser(lambda x, sigma: x[:, :1], sde)(x, t)


# -- diffusers: the same model, the same steps, the same result ------------------------------------------------
def tiny_unet(num_class_embeds=None):
    diffusers = pytest.importorskip("diffusers")
    torch.manual_seed(0)
    unet = diffusers.UNet2DModel(sample_size=8, in_channels=1, out_channels=1, layers_per_block=1,
                                 block_out_channels=(8, 16), down_block_types=("DownBlock2D", "DownBlock2D"),
                                 up_block_types=("UpBlock2D", "UpBlock2D"), norm_num_groups=4,
                                 num_class_embeds=num_class_embeds)
    return unet.double().eval()


def assert_relative(ours, theirs, tol=2e-4):
    """‖ours − theirs‖ / ‖theirs‖ ≤ tol: diffusers computes its step coefficients from float32 ᾱ in float32
    (1 − ᾱ, square roots, λ_t − λ_s, which cancels) and casts the sample to float32 at each step, so agreement is
    at float32 rounding amplified over the steps: 10–12 steps × about 20 roundings (10 in the coefficients, |λ|/h
    from the cancellation) × u = 2⁻²⁴ ≈ 2e-5 in the worst case; 10× that. A wrong formula is off by > 1e-3."""
    error = float((ours - theirs).norm() / theirs.norm())
    assert error <= tol, error


def run_scheduler(unet, scheduler, x):
    for timestep in scheduler.timesteps:
        with torch.no_grad():
            out = unet(x, timestep).sample
        x = scheduler.step(out, timestep, x).prev_sample
    return x


def run_sigma_scheduler(unet, scheduler, z):
    """A σ-space scheduler's loop (Euler, Heun) from z times its initial σ: the state is x/s, the network sees
    scale_model_input(x)."""
    x = z * scheduler.init_noise_sigma
    for timestep in scheduler.timesteps:
        with torch.no_grad():
            out = unet(scheduler.scale_model_input(x, timestep), timestep).sample
        x = scheduler.step(out, timestep, x).prev_sample
    return x


def our_times(scheduler):
    return (scheduler.timesteps.to(F64) + 1) / scheduler.config.num_train_timesteps


def test_ddim_scheduler_is_our_order_one_solver_with_final_denoising():
    """diffusers DDIMScheduler (η = 0, no clipping, ᾱ_final = 1) for K steps = DPMSolver(order=1) on the times
    (timesteps + 1)/N: K − 1 DDIM steps, then the last step to ᾱ = 1, which is Tweedie's x̂_0 (denoise=True)."""
    diffusers = pytest.importorskip("diffusers")
    unet = tiny_unet()
    scheduler = diffusers.DDIMScheduler(num_train_timesteps=1000, clip_sample=False, set_alpha_to_one=True)
    scheduler.set_timesteps(10)
    x_T = torch.randn((4, 1, 8, 8), generator=torch.Generator().manual_seed(1), dtype=F64)
    theirs = run_scheduler(unet, scheduler, x_T.clone())
    sde, score = sd.from_diffusers(unet, scheduler)
    res = sd.DPMSolver(order=1, denoise=True).sample(sde, score, x_T.shape, x_T=x_T, times=our_times(scheduler))
    assert res.nfe == 10
    assert_relative(res.x, theirs)


def test_text_conditional_unet_with_classifier_free_guidance_is_the_pipelines_loop():
    """A UNet2DConditionModel (cross-attention on encoder_hidden_states) sampled as Stable Diffusion's pipeline does
    it — a doubled batch [x, x] with [uncond, cond] embeddings, ε = ε_u + g (ε_c − ε_u), DDIMScheduler steps — equals
    our DPMSolver(order=1) on sd.classifier_free_guidance(score, {"encoder_hidden_states": c}, w = g − 1,
    null_cond={"encoder_hidden_states": u}) of sd.from_diffusers(unet, scheduler): the embeddings reach the
    network as its keyword, the null rows are diffusers' unconditional ones, and guidance is the same formula
    ((1 + w) ε_c − w ε_u = ε_u + g (ε_c − ε_u)). Same tolerance as the unconditional schedulers (assert_relative)."""
    diffusers = pytest.importorskip("diffusers")
    torch.manual_seed(0)
    unet = diffusers.UNet2DConditionModel(
        sample_size=8, in_channels=1, out_channels=1, layers_per_block=1, block_out_channels=(8, 16),
        down_block_types=("CrossAttnDownBlock2D", "DownBlock2D"), up_block_types=("UpBlock2D", "CrossAttnUpBlock2D"),
        cross_attention_dim=12, norm_num_groups=4, attention_head_dim=4).double().eval()
    g = torch.Generator().manual_seed(4)
    text = torch.randn(3, 5, 12, generator=g, dtype=F64)           # one prompt's embeddings per sample
    empty = torch.randn(5, 12, generator=g, dtype=F64)             # the "" prompt's, shared
    scale = 4.0
    scheduler = diffusers.DDIMScheduler(num_train_timesteps=1000, clip_sample=False, set_alpha_to_one=True)
    scheduler.set_timesteps(8)
    x_T = torch.randn((3, 1, 8, 8), generator=g, dtype=F64)
    x = x_T.clone()
    embeddings = torch.cat([empty.expand(3, 5, 12), text])
    for timestep in scheduler.timesteps:
        with torch.no_grad():
            eps_u, eps_c = unet(torch.cat([x, x]), timestep, encoder_hidden_states=embeddings).sample.chunk(2)
        x = scheduler.step(eps_u + scale * (eps_c - eps_u), timestep, x).prev_sample
    sde, score = sd.from_diffusers(unet, scheduler)
    guided = sd.classifier_free_guidance(score, {"encoder_hidden_states": text}, scale=scale - 1,
                                         null_cond={"encoder_hidden_states": empty})
    with torch.no_grad():
        res = sd.DPMSolver(order=1, denoise=True).sample(sde, guided, x_T.shape, x_T=x_T, times=our_times(scheduler))
    assert res.nfe == 8 and res.network_evaluations == 16
    assert_relative(res.x, x)
    unguided = sd.DPMSolver(order=1, denoise=True).sample(sde, sd.conditional_score(score, text), x_T.shape,
                                                          x_T=x_T, times=our_times(scheduler))
    assert float((unguided.x - x).norm() / x.norm()) > 1e-2          # guidance changed the result: not vacuous


@pytest.mark.parametrize("prediction_type", ["epsilon", "v_prediction", "sample"])
def test_dpm_solver_multistep_scheduler_is_our_dpm_solver_pp_2m(prediction_type):
    """diffusers DPMSolverMultistepScheduler (dpmsolver++, order 2, midpoint, lower_order_final: the last step to
    σ = 0 is first order, i.e. x̂_0) = DPMSolver(order=2, denoise=True) on the times (timesteps + 1)/N, for each
    prediction type the adapter reads."""
    diffusers = pytest.importorskip("diffusers")
    unet = tiny_unet()
    scheduler = diffusers.DPMSolverMultistepScheduler(num_train_timesteps=1000, algorithm_type="dpmsolver++",
                                                      solver_order=2, prediction_type=prediction_type)
    scheduler.set_timesteps(10)
    x_T = torch.randn((4, 1, 8, 8), generator=torch.Generator().manual_seed(2), dtype=F64)
    theirs = run_scheduler(unet, scheduler, x_T.clone())
    sde, score = sd.from_diffusers(unet, scheduler)
    res = sd.DPMSolver(order=2, denoise=True).sample(sde, score, x_T.shape, x_T=x_T, times=our_times(scheduler))
    assert_relative(res.x, theirs)


@pytest.mark.parametrize("order", [1, 2, 3])
def test_unipc_multistep_scheduler_is_our_unipc(order):
    """diffusers UniPCMultistepScheduler (predict_x0, bh2, lower_order_final, the last step to σ = 0) =
    UniPCSampler(order, lower_order_final=True, denoise=True) on the times (timesteps + 1)/N. (diffusers' "bh1"
    returns NaN here: its last step to σ = 0 divides by B(h) = −h = −∞; ours has no such step.)"""
    diffusers = pytest.importorskip("diffusers")
    unet = tiny_unet()
    scheduler = diffusers.UniPCMultistepScheduler(num_train_timesteps=1000, solver_order=order, solver_type="bh2",
                                                  predict_x0=True)
    scheduler.set_timesteps(10)
    x_T = torch.randn((4, 1, 8, 8), generator=torch.Generator().manual_seed(2), dtype=F64)
    theirs = run_scheduler(unet, scheduler, x_T.clone())
    sde, score = sd.from_diffusers(unet, scheduler)
    res = sd.UniPCSampler(order=order, lower_order_final=True, denoise=True).sample(
        sde, score, x_T.shape, x_T=x_T, times=our_times(scheduler))
    assert res.nfe == 10
    assert_relative(res.x, theirs)


@pytest.mark.slow
def test_diffusers_model_likelihood_labels_and_errors():
    diffusers = pytest.importorskip("diffusers")
    unet = tiny_unet(num_class_embeds=3)
    scheduler = diffusers.DDPMScheduler(num_train_timesteps=1000)
    sde, score = sd.from_diffusers(unet, scheduler, cond=torch.tensor([0, 2]))
    x = torch.rand((2, 1, 8, 8), generator=torch.Generator().manual_seed(3), dtype=F64) * 2 - 1
    res = sd.log_likelihood(sde, score, x, rtol=1e-3, atol=1e-3)        # none of the peers offers this
    assert res.log_prob.shape == (2,) and bool(torch.isfinite(res.log_prob).all())
    t = torch.full((2,), 0.5, dtype=F64)
    other = sd.from_diffusers(unet, scheduler, cond=torch.tensor([1, 1]))[1]
    assert not torch.allclose(score(x, t), other(x, t))                  # the labels reach the network
    scheduler.register_to_config(prediction_type="flow")
    with pytest.raises(ValueError, match="unsupported prediction_type 'flow'"):
        sd.from_diffusers(unet, scheduler)
    with pytest.raises(TypeError, match="alphas_cumprod"):
        sd.from_diffusers(unet, object())


def test_stochastic_ddim_and_ddpm_schedulers_with_the_same_noise():
    """DDIMScheduler with η = 0.5 (its variance_noise = our draws, in order) and DDPMScheduler (posterior variance
    "fixed_small", the same seeded generator) = our DDIMSampler(eta=0.5 / 1.0, denoise=True) on the times
    (timesteps + 1)/N: the last step of both goes to ᾱ = 1 without noise, our final denoising."""
    diffusers = pytest.importorskip("diffusers")
    unet = tiny_unet()
    x_T = torch.randn((4, 1, 8, 8), generator=torch.Generator().manual_seed(3), dtype=F64)

    ddim = diffusers.DDIMScheduler(num_train_timesteps=1000, clip_sample=False, set_alpha_to_one=True)
    ddim.set_timesteps(12)
    noise = torch.Generator().manual_seed(7)
    x = x_T.clone()
    for timestep in ddim.timesteps:
        with torch.no_grad():
            out = unet(x, timestep).sample
        z = torch.randn(x.shape, generator=noise, dtype=F64)
        x = ddim.step(out, timestep, x, eta=0.5, variance_noise=z).prev_sample
    sde, score = sd.from_diffusers(unet, ddim)
    ours = sd.DDIMSampler(eta=0.5, denoise=True).sample(sde, score, x_T.shape, x_T=x_T, times=our_times(ddim),
                                                        generator=torch.Generator().manual_seed(7))
    assert_relative(ours.x, x)

    ddpm = diffusers.DDPMScheduler(num_train_timesteps=1000, clip_sample=False)
    ddpm.set_timesteps(12)
    generator = torch.Generator().manual_seed(8)
    x = x_T.clone()
    for timestep in ddpm.timesteps:
        with torch.no_grad():
            out = unet(x, timestep).sample
        x = ddpm.step(out, timestep, x, generator=generator).prev_sample
    ours = sd.DDIMSampler(eta=1.0, denoise=True).sample(sde, score, x_T.shape, x_T=x_T, times=our_times(ddpm),
                                                        generator=torch.Generator().manual_seed(8))
    assert_relative(ours.x, x)


def test_dpm_solver_pp_3m_differs_from_diffusers_only_by_its_halved_second_derivative_term():
    """Order 3 with diffusers' lower_order_final default (with fewer than 15 steps the last step is first order,
    the one before second order): DPMSolver(order=3, denoise=True, lower_order_final=True).

    By design the two differ in one coefficient. diffusers (and the official DPM-Solver code) apply
    −α_t((e^{−h} − 1 + h)/h² − ½) D2 with D2 = (D1_0 − D1_1)/(r0 + r1) ≈ h² m''/2, i.e. φ_2 m''/2, where the
    exact integral of the quadratic Taylor term is φ_2 m'' (φ_2 = h²/2 − h + 1 − e^{−h}); so their 3M integrates
    a quadratic model inexactly (local error O(h³), tests/test_sampling_dpm.py checks ours is exact). With that
    term halved, ours reproduces theirs to float32 rounding; as it is, it differs by more than rounding."""
    diffusers = pytest.importorskip("diffusers")

    class HalvedSecondDerivative(sd.DPMSolver):
        def _step(self, x, frm, to, m, a=None, b=None, taylor=None):
            return super()._step(x, frm, to, m, a, None if b is None else 0.5 * b, taylor)

    unet = tiny_unet()
    scheduler = diffusers.DPMSolverMultistepScheduler(num_train_timesteps=1000, algorithm_type="dpmsolver++",
                                                      solver_order=3)
    scheduler.set_timesteps(10)
    x_T = torch.randn((4, 1, 8, 8), generator=torch.Generator().manual_seed(4), dtype=F64)
    theirs = run_scheduler(unet, scheduler, x_T.clone())
    sde, score = sd.from_diffusers(unet, scheduler)
    options = dict(order=3, denoise=True, lower_order_final=True)
    halved = HalvedSecondDerivative(**options).sample(sde, score, x_T.shape, x_T=x_T, times=our_times(scheduler)).x
    assert_relative(halved, theirs)
    ours = sd.DPMSolver(**options).sample(sde, score, x_T.shape, x_T=x_T, times=our_times(scheduler)).x
    assert float((ours - theirs).norm() / theirs.norm()) > 1e-3


@pytest.mark.slow
def test_a_diffusers_unet_trains_with_our_trainer():
    """The adapted score is an nn.Module holding the UNet: dsm_loss back-propagates into the UNet's weights and
    the Trainer lowers the loss on digits (a few steps; the loss is measured on one fixed batch and seed)."""
    diffusers = pytest.importorskip("diffusers")
    unet = tiny_unet().float().train()
    sde, score = sd.from_diffusers(unet, diffusers.DDPMScheduler(num_train_timesteps=1000))
    assert isinstance(score, torch.nn.Module) and sum(p.numel() for p in score.parameters()) > 0
    data = sd.data.load("digits")
    x0 = data.x[:64]

    def fixed_loss():
        with torch.no_grad():
            return float(sd.dsm_loss(sde, score, x0, generator=torch.Generator().manual_seed(0)))

    before = fixed_loss()
    trainer = sd.Trainer(score, sde, data, sd.TrainConfig(steps=60, batch_size=64, progress=False, lr=2e-3,
                                                          checkpoint_every=0))
    trainer.train()
    assert fixed_loss() < before


@pytest.mark.slow
def test_importing_scoresde_does_not_import_diffusers():
    import subprocess
    import sys

    code = "import sys, scoresde; sys.exit(1 if 'diffusers' in sys.modules else 0)"
    assert subprocess.run([sys.executable, "-c", code]).returncode == 0


@pytest.mark.parametrize("kind", ["euler", "heun"])
def test_euler_and_heun_discrete_schedulers(kind):
    """EulerDiscreteScheduler / HeunDiscreteScheduler (their default σ's: the table's at the timesteps, which are
    integers for N = 1000 and K = 10) = our HeunSampler(order=1) / HeunSampler(final_correction=True), both with
    denoise=True, on the times (timesteps + 1)/N. Their state is x/s (EDM's variables) with a final step to σ = 0
    (our denoising); ours starts from s(t_0) times their x_T."""
    diffusers = pytest.importorskip("diffusers")
    unet = tiny_unet()
    cls = diffusers.EulerDiscreteScheduler if kind == "euler" else diffusers.HeunDiscreteScheduler
    scheduler = cls(num_train_timesteps=1000)
    scheduler.set_timesteps(10)
    times = torch.unique(scheduler.timesteps.to(F64)).flip(0)
    assert torch.equal(times, times.round())                            # integer timesteps: no interpolation
    z = torch.randn((4, 1, 8, 8), generator=torch.Generator().manual_seed(5), dtype=F64)
    x = run_sigma_scheduler(unet, scheduler, z)
    sde, score = sd.from_diffusers(unet, scheduler)
    ours_times = (times + 1) / 1000
    sampler = (sd.HeunSampler(order=1, denoise=True) if kind == "euler"
               else sd.HeunSampler(final_correction=True, denoise=True))
    x_T = float(sde.scale(ours_times[:1])) * z * scheduler.init_noise_sigma
    res = sampler.sample(sde, score, z.shape, x_T=x_T, times=ours_times)
    assert res.nfe == len(scheduler.timesteps)
    assert_relative(res.x, x)


def test_karras_sigmas_on_fractional_timesteps():
    """With use_karras_sigmas the σ's fall between the table's timesteps. diffusers maps σ to a timestep by
    interpolating log σ; DiscreteVPSDE interpolates log s linearly in t. At the same σ the two fractional timesteps
    differ by less than 0.01 here (N = 1000, K = 10), and the sampled results agree to float32 rounding."""
    diffusers = pytest.importorskip("diffusers")
    unet = tiny_unet()
    scheduler = diffusers.EulerDiscreteScheduler(num_train_timesteps=1000, use_karras_sigmas=True)
    scheduler.set_timesteps(10)
    z = torch.randn((4, 1, 8, 8), generator=torch.Generator().manual_seed(6), dtype=F64)
    x = run_sigma_scheduler(unet, scheduler, z)
    sde, score = sd.from_diffusers(unet, scheduler)
    times = sde.time_from_log_snr(-2 * torch.log(scheduler.sigmas[:-1].to(F64)))      # σ/s(t) = their σ
    assert float((sde.time_to_timestep(times) - scheduler.timesteps.to(F64)).abs().max()) < 0.01
    x_T = float(sde.scale(times[:1])) * z * scheduler.init_noise_sigma
    ours = sd.HeunSampler(order=1, denoise=True).sample(sde, score, z.shape, x_T=x_T, times=times).x
    assert_relative(ours, x)


def scheduler_test_sample():
    """diffusers' ``SchedulerCommonTest.dummy_sample_deter``: arange(768)/768 laid out as (3, 8, 8, 4), batch last,
    permuted to (4, 3, 8, 8)."""
    n = 4 * 3 * 8 * 8
    return (torch.arange(n, dtype=F64).reshape(3, 8, 8, 4) / n).permute(3, 0, 1, 2)


def scheduler_test_model(x, timestep):
    """diffusers' ``SchedulerCommonTest.dummy_model``: ε(x, n) = x n/(n + 1) (n the timestep)."""
    n = timestep.reshape(-1, 1, 1, 1).to(x)
    return x * n / (n + 1)


@pytest.mark.parametrize("final_sigmas_type, expected", [("sigma_min", 1.1364), ("zero", None)])
def test_dpm_solver_multistep_full_loop_with_dynamic_thresholding(final_sigmas_type, expected):
    """diffusers' test_scheduler_dpm_multi.test_full_loop_no_noise_thres (dpmsolver++ 2M, 10 steps,
    thresholding=True, dynamic_thresholding_ratio=0.87, sample_max_value=0.5, their dummy model and sample):
    mean |x| = 1.1364 ± 1e-3 is their number, for a last step to timestep 0's σ (final_sigmas_type="sigma_min",
    the rule their test was written under: our grid ends at t = 1/N). Their current default ends at σ = 0 (our
    final denoising); both are compared with the installed diffusers too. The threshold is on x̂_0 at every
    evaluation, so with max_value = 0.5 < 1 every prediction is clipped to ±0.5 and rescaled to ±1."""
    diffusers = pytest.importorskip("diffusers")
    scheduler = diffusers.DPMSolverMultistepScheduler(
        num_train_timesteps=1000, beta_start=0.0001, beta_end=0.02, beta_schedule="linear", solver_order=2,
        prediction_type="epsilon", thresholding=True, dynamic_thresholding_ratio=0.87, sample_max_value=0.5,
        algorithm_type="dpmsolver++", solver_type="midpoint", lower_order_final=False,
        final_sigmas_type=final_sigmas_type)
    scheduler.set_timesteps(10)
    x_T = scheduler_test_sample()
    theirs = x_T.clone()
    for timestep in scheduler.timesteps:
        theirs = scheduler.step(scheduler_test_model(theirs, timestep), timestep, theirs).prev_sample
    sde, score = sd.from_diffusers(scheduler_test_model, scheduler)
    threshold = sd.DynamicThreshold(ratio=0.87, max_value=0.5)
    times = our_times(scheduler)
    if final_sigmas_type == "sigma_min":
        times = torch.cat([times, times.new_tensor([1.0 / 1000])])
        sampler = sd.DPMSolver(order=2, threshold=threshold)
    else:
        sampler = sd.DPMSolver(order=2, denoise=True, threshold=threshold)
    ours = sampler.sample(sde, score, x_T.shape, x_T=x_T, times=times).x
    assert_relative(ours, theirs)
    if expected is not None:
        assert abs(float(ours.abs().mean()) - expected) < 1e-3
    unthresholded = sd.DPMSolver(order=2, denoise=final_sigmas_type == "zero").sample(
        sde, score, x_T.shape, x_T=x_T, times=times).x
    assert float((unthresholded - ours).norm() / ours.norm()) > 0.1          # the threshold is active
