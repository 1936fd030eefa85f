//! Sampling with each sampler: the code of the README's "Sampling with each sampler" (a test checks that every
//! snippet there appears here verbatim). Run with `cargo run --example samplers`.

use diffuse_spec::interfaces::{Edm, EdmConfig, MeanFlow, MeanFlowConfig, SiT, SiTConfig};
use diffuse_spec::networks::{ProbeMlp, ProbeMlpConfig};
use diffuse_spec::rng::Rngs;
use diffuse_spec::samplers::{
    AnySampler, ConstantCoeff, DiffusionCoeff, Euler, EulerJump, EulerJumpOptions, EulerMaruyama, EulerMaruyamaOptions, GridKind, GridKwargs, Heun, HeunOptions, HeunVariant,
    JumpGuidance, LastStepLabels, Model, Sample, SamplerConfig,
};
use diffuse_spec::Result;
use tch::{Device, Kind, Tensor};

fn euler_example(net: &ProbeMlp, noise: &Tensor, y: &Tensor) -> Result<Tensor> {
    let sit = SiT::new(SiTConfig::default())?;
    // 16 steps on linspace(1, 0, 17), guidance scale 3 against the null class 1000.
    let euler = Euler::new(SamplerConfig::new(16, GridKind::Uniform))?;
    let mut rngs = Rngs::with_default(0);
    tch::no_grad(|| euler.sample(&mut rngs, Model::new(&sit, net), noise, None, 3.0, Some(y)))
}

fn heun_example(net: &ProbeMlp, noise: &Tensor, y: &Tensor) -> Result<Tensor> {
    let edm = Edm::new(EdmConfig::default())?;
    // EDM's sigma grid (80 -> 0.002, rho 7, then 0): 12 steps asked, 13 taken (quirk Q4).
    let cfg = SamplerConfig::new(12, GridKind::Exp);
    // The reference's Heun reuses its first slope (quirk Q1); ask for the true Heun by name.
    let heun = Heun::new(cfg, HeunOptions { variant: HeunVariant::True })?;
    let mut rngs = Rngs::with_default(0);
    tch::no_grad(|| heun.sample(&mut rngs, Model::new(&edm, net), noise, None, 1.0, Some(y)))
}

fn euler_maruyama_example(net: &ProbeMlp, noise: &Tensor, y: &Tensor) -> Result<Tensor> {
    let sit = SiT::new(SiTConfig::default())?;
    // linear_kl is infinite at t = 1 (quirk Q5): start the grid just below it.
    let kw = GridKwargs { t_start: Some(0.98), t_end: Some(0.04), ..Default::default() };
    let cfg = SamplerConfig { num_sampling_steps: 20, sampling_time_dist: GridKind::Uniform, sampling_time_kwargs: kw };
    let opts = EulerMaruyamaOptions {
        diffusion_coeff: DiffusionCoeff::LinearKl,
        diffusion_coeff_norm: 1.0,
        last_step_labels: LastStepLabels::Null, // the reference uses the labels (quirk Q6)
        constant_coeff: ConstantCoeff::Refuse,
    };
    let em = EulerMaruyama::new(cfg, opts)?;
    // The noise comes from the `default` stream, as the reference's `nnx.Rngs(3)`.
    let mut rngs = Rngs::with_default(3);
    tch::no_grad(|| em.sample(&mut rngs, Model::new(&sit, net), noise, None, 2.0, Some(y)))
}

fn euler_jump_example(mean_flow: &MeanFlow, net: &ProbeMlp, noise: &Tensor, y: &Tensor) -> Result<Tensor> {
    // Two jumps 1 -> 0.5 -> 0 with the average velocity u(x, t, r = t_next).
    let jump = EulerJump::new(SamplerConfig::new(2, GridKind::Uniform), EulerJumpOptions { guidance: JumpGuidance::Refuse })?;
    let mut rngs = Rngs::with_default(0);
    tch::no_grad(|| jump.sample(&mut rngs, Model::new(mean_flow, net), noise, None, 1.0, Some(y)))
}

fn from_reference_settings_example() -> Result<AnySampler> {
    // A reference `sampler` block (its `type` apart), e.g. from a config file.
    let block = serde_json::json!({
        "num_sampling_steps": 10,
        "sampling_time_dist": "uniform",
        "sampling_time_kwargs": {"t_end": 0.05},
        "diffusion_coeff": "linear",
        "diffusion_coeff_norm": 0.3
    });
    let settings = block.as_object().cloned().unwrap_or_default();
    AnySampler::from_settings("euler-maruyama", &settings)
}

fn main() -> Result<()> {
    let net = ProbeMlp::init(ProbeMlpConfig { channels: 3, hidden: 8, freqs: 3 }, 0, Device::Cpu)?;
    let mut rngs = Rngs::with_default(42);
    let noise = rngs.normal("noise", &[4, 4, 4, 3], Device::Cpu)?;
    let y = Tensor::from_slice(&[1i64, 2, 3, 4]);
    for (name, x) in [
        ("euler", euler_example(&net, &noise, &y)?),
        ("heun (true)", heun_example(&net, &noise, &y)?),
        ("euler-maruyama", euler_maruyama_example(&net, &noise, &y)?),
    ] {
        println!("{name:>15}: shape {:?}, mean {:+.4}, std {:.4}", x.size(), x.mean(Kind::Float).double_value(&[]), x.std(true).double_value(&[]));
    }
    // Euler-jump needs an average-velocity model (MeanFlow's u(x, t, r)); with SiT it does not compile.
    let mean_flow = MeanFlow::new(MeanFlowConfig::default())?;
    let x = euler_jump_example(&mean_flow, &net, &noise, &y)?;
    println!("{:>15}: shape {:?}, mean {:+.4}", "euler_jump", x.size(), x.mean(Kind::Float).double_value(&[]));
    let s = from_reference_settings_example()?;
    println!("from settings: {} with {} grid points", s.as_sampler().name(), s.as_sampler().timegrid()?.len());
    Ok(())
}
