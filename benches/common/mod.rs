//! Shared by the criterion benches (`benches/interfaces.rs`, `benches/samplers.rs`) and the
//! comparison binary (`examples/bench_step.rs`): the two fixed configurations, the training
//! step of each interface, the samplers, and the analytic FLOP count of the DiT.
//!
//! - `bench-s` (CPU): DiT, 16x16x4 inputs, patch 2, hidden 192, depth 6, 3 heads, batch 16, f32;
//!   the LightningDiT of the same sizes with the reference's ImageNet switches (SwiGLU, RoPE,
//!   RMSNorm, adaLN with shift).
//! - `bench-xl` (CUDA only): DiT-XL/2 (hidden 1152, depth 28, 16 heads), 32x32x4, batch 256,
//!   f32 and bf16 autocast.
//!
//! One training step = fresh streams, `loss(x, y)` (sampling t / noise / labels inside),
//! mean over the batch, gradients of every trainable parameter by `run_backward` (the
//! functional form, like `jax.value_and_grad`: nothing accumulates into `.grad`).
#![allow(dead_code)]

use diffuse_spec::interfaces::{AnyInterface, BaseConfig, Edm, EdmConfig, Interface, MeanFlow, MeanFlowConfig, Projector, Repa, RepaConfig, Sct, SctConfig, SiT, SiTConfig, TimeDist};
use diffuse_spec::jvp::JvpBackend;
use diffuse_spec::networks::{Attention, Backbone, Cond, Dit, DitConfig, LayerNorm, LightningDit, LightningDitConfig, Pass, ProbeMlp, ProbeMlpConfig};
use diffuse_spec::rng::Rngs;
use diffuse_spec::samplers::{AnySampler, Euler, EulerJump, EulerJumpOptions, EulerMaruyama, EulerMaruyamaOptions, GridKind, GridKwargs, Heun, HeunOptions, Model, Sample, SampleArgs, SamplerConfig};
use diffuse_spec::{Error, Result};
use tch::{Device, Kind, Tensor};

/// The H200's dense bf16 tensor-core peak the brief measures against (TFLOP/s).
pub const H200_BF16_PEAK_TFLOPS: f64 = 790.0;

/// A fixed benchmark configuration.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Config {
    /// DiT-S-like on CPU.
    BenchS,
    /// DiT-XL/2 on CUDA.
    BenchXl,
}

impl Config {
    pub fn parse(s: &str) -> Result<Config> {
        match s {
            "bench-s" => Ok(Config::BenchS),
            "bench-xl" => Ok(Config::BenchXl),
            _ => Err(Error::invalid("config", "bench-s or bench-xl", s)),
        }
    }
    pub fn name(self) -> &'static str {
        match self {
            Config::BenchS => "bench-s",
            Config::BenchXl => "bench-xl",
        }
    }
    pub fn batch(self) -> i64 {
        match self {
            Config::BenchS => 16,
            Config::BenchXl => 256,
        }
    }
    /// The DiT of this configuration (`take_dt` for MeanFlow).
    pub fn dit(self, take_dt: bool) -> DitConfig {
        match self {
            Config::BenchS => DitConfig { input_size: 16, patch_size: 2, in_channels: 4, hidden_size: 192, depth: 6, num_heads: 3, take_dt, ..DitConfig::default() },
            Config::BenchXl => DitConfig { take_dt, ..DitConfig::default() },
        }
    }
    /// The LightningDiT of this configuration: the DiT's sizes with the ImageNet switches.
    pub fn lightning(self, take_dt: bool) -> LightningDitConfig {
        LightningDitConfig::imagenet_switches(self.dit(take_dt))
    }
}

/// Which network.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Net {
    /// The probe MLP (channels 4, hidden 256, 8 frequencies) on the configuration's data.
    Probe,
    /// The configuration's DiT.
    Dit,
    /// The configuration's LightningDiT (SwiGLU, RoPE, RMSNorm, adaLN shift).
    Lightning,
}

/// What one step computes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Step {
    Sit,
    Edm,
    /// MeanFlow with the fused JVP (the backbone's own primal-and-tangent pass), SDPA attention.
    MeanFlowFused,
    MeanFlowDb,
    MeanFlowFad,
    /// sCT (TrigFlow consistency training, paper defaults) with the fused JVP, SDPA attention.
    SctFused,
    /// sCT with the double-backward JVP (math attention).
    SctDb,
    /// sCT with forward AD (math attention).
    SctFad,
    /// REPA around SiT (features of block `depth / 3`; targets of 768 and a projector of hidden
    /// 2048 on DiT-XL, 512 on bench-s, 64 / 64 on the probe).
    Repa,
    /// The bare network: forward on fixed `(x, t, y)`, `mean(out^2)`, gradients.
    Net,
    /// The bare network as MeanFlow calls it (with `dt`).
    NetDt,
}

impl Step {
    pub const ALL: [Step; 11] = [Step::Sit, Step::Edm, Step::MeanFlowFused, Step::MeanFlowDb, Step::MeanFlowFad, Step::SctFused, Step::SctDb, Step::SctFad, Step::Repa, Step::Net, Step::NetDt];

    pub fn parse(s: &str) -> Result<Step> {
        Step::ALL.into_iter().find(|k| k.name() == s).ok_or_else(|| {
            Error::invalid("interface", "sit, edm, meanflow-fused, meanflow-db, meanflow-fad, sct-fused, sct-db, sct-fad, repa, net, net-dt", s)
        })
    }
    pub fn name(self) -> &'static str {
        match self {
            Step::Sit => "sit",
            Step::Edm => "edm",
            Step::MeanFlowFused => "meanflow-fused",
            Step::MeanFlowDb => "meanflow-db",
            Step::MeanFlowFad => "meanflow-fad",
            Step::SctFused => "sct-fused",
            Step::SctDb => "sct-db",
            Step::SctFad => "sct-fad",
            Step::Repa => "repa",
            Step::Net => "net",
            Step::NetDt => "net-dt",
        }
    }
    fn takes_dt(self) -> bool {
        matches!(self, Step::MeanFlowFused | Step::MeanFlowDb | Step::MeanFlowFad | Step::NetDt)
    }
    /// Whether the step needs the math attention (forward AD / double backward; the fused JVP
    /// runs its primal through SDPA).
    pub fn needs_math_attention(self) -> bool {
        matches!(self, Step::MeanFlowDb | Step::MeanFlowFad | Step::SctDb | Step::SctFad)
    }
    /// Whether the step is MeanFlow.
    pub fn is_meanflow(self) -> bool {
        matches!(self, Step::MeanFlowFused | Step::MeanFlowDb | Step::MeanFlowFad)
    }
    /// Whether the step is sCT.
    pub fn is_sct(self) -> bool {
        matches!(self, Step::SctFused | Step::SctDb | Step::SctFad)
    }
    /// Forward-pass equivalents of matmul work per step (for model FLOP/s): forward + backward
    /// = 3; MeanFlow (default guidance: two no-grad forwards for `v_unc`, `v_c`; the JVP ~2; the
    /// backward of `u` 2) = 6; sCT (the JVP ~2, the backward 2) = 4. The autograd JVPs do more
    /// work than this (they are counted as the same model FLOPs: the measure is of useful work).
    pub fn forward_equivalents(self) -> f64 {
        if self.is_meanflow() {
            6.0
        } else if self.is_sct() {
            4.0
        } else {
            3.0
        }
    }
}

/// The MeanFlow settings every implementation benches: the reference's defaults.
pub fn meanflow_config(jvp: JvpBackend) -> MeanFlowConfig {
    MeanFlowConfig { jvp, ..MeanFlowConfig::default() }
}

/// The sCT settings every implementation benches: the paper's defaults (log-normal proposal
/// `P_mean -1.0`, `P_std 1.4`, `sigma_d 0.5`, warm-up 10000 steps: step 0, so `r = 0`; the JVP
/// is computed all the same).
pub fn sct_config(jvp: JvpBackend) -> SctConfig {
    SctConfig { jvp, ..SctConfig::default() }
}

/// EDM's own time distribution (log-normal, mu -1.2, sigma 1.2).
pub fn edm_config() -> EdmConfig {
    EdmConfig { base: BaseConfig { train_time_dist_type: TimeDist::LogNormal, t_mu: -1.2, t_sigma: 1.2, ..BaseConfig::default() }, ..EdmConfig::default() }
}

enum Iface {
    Plain(Box<dyn Interface>),
    Repa(Repa, Tensor),
    Net { t: Tensor, dt: Option<Tensor> },
}

/// Choices beyond the configuration; `Default` is what the benches use.
#[derive(Debug, Clone, Copy, Default)]
pub struct StepOptions {
    /// `None`: fused where the step allows it (SiT, EDM, REPA), math for MeanFlow.
    pub attention: Option<Attention>,
    /// `None`: libtorch's fused LayerNorm.
    pub layer_norm: Option<LayerNorm>,
    /// `None`: the configuration's batch.
    pub batch: Option<i64>,
}

/// Everything one training step needs, built once.
pub struct TrainStep {
    pub step: Step,
    pub net: Box<dyn Backbone>,
    iface: Iface,
    pub x: Tensor,
    pub y: Tensor,
    pub batch: i64,
    params: Vec<Tensor>,
    pub attention: Option<Attention>,
    pub layer_norm: Option<LayerNorm>,
    pub tokens_per_example: i64,
    pub forward_flops_per_example: f64,
    seed: i64,
}

/// The random data of one configuration: `x ~ N(0, 1)` `[B, H, W, 4]`, labels `37 i mod 1000`.
pub fn data(cfg: Config, device: Device) -> Result<(Tensor, Tensor)> {
    data_with_batch(cfg, cfg.batch(), device)
}

/// [`data`] with another batch size.
pub fn data_with_batch(cfg: Config, b: i64, device: Device) -> Result<(Tensor, Tensor)> {
    let d = cfg.dit(false);
    let mut rngs = Rngs::new(&[("data", 7)])?;
    let x = rngs.normal("data", &[b, d.input_size, d.input_size, d.in_channels], device)?;
    let y = Tensor::f_arange(b, (Kind::Int64, device))?.f_mul_scalar(37)?.f_remainder(1000)?;
    Ok((x, y))
}

impl TrainStep {
    pub fn new(cfg: Config, net: Net, step: Step, device: Device, opts: StepOptions) -> Result<TrainStep> {
        let StepOptions { attention, layer_norm, batch } = opts;
        let batch = batch.unwrap_or(cfg.batch());
        let (x, y) = data_with_batch(cfg, batch, device)?;
        let dcfg = cfg.dit(step.takes_dt());
        let mut ln = None;
        let (net_box, hidden, depth, att, tokens, flops): (Box<dyn Backbone>, i64, i64, Option<Attention>, i64, f64) = match net {
            Net::Probe => {
                let p = ProbeMlp::init(ProbeMlpConfig { channels: dcfg.in_channels, hidden: 256, freqs: 8 }, 0, device)?;
                (Box::new(p), 256, 1, None, dcfg.input_size * dcfg.input_size, 0.0)
            }
            Net::Dit => {
                let a = attention.unwrap_or(if step.needs_math_attention() { Attention::Math } else { Attention::Fused });
                let n = layer_norm.unwrap_or(LayerNorm::Fused);
                let d = Dit::init(dcfg.clone(), 0, device)?.with_attention(a).with_layer_norm(n);
                ln = Some(n);
                (Box::new(d), dcfg.hidden_size, dcfg.depth, Some(a), dcfg.tokens(), dit_forward_flops(&dcfg))
            }
            Net::Lightning => {
                let a = attention.unwrap_or(if step.needs_math_attention() { Attention::Math } else { Attention::Fused });
                let n = layer_norm.unwrap_or(LayerNorm::Fused);
                let lcfg = cfg.lightning(step.takes_dt());
                let d = LightningDit::init(lcfg.clone(), 0, device)?.with_attention(a).with_layer_norm(n);
                ln = Some(n);
                (Box::new(d), dcfg.hidden_size, dcfg.depth, Some(a), dcfg.tokens(), lightning_forward_flops(&lcfg))
            }
        };
        let iface = match step {
            Step::Sit => Iface::Plain(Box::new(SiT::new(SiTConfig::default())?)),
            Step::Edm => Iface::Plain(Box::new(Edm::new(edm_config())?)),
            Step::MeanFlowFused => Iface::Plain(Box::new(MeanFlow::new(meanflow_config(JvpBackend::Fused))?)),
            Step::MeanFlowDb => Iface::Plain(Box::new(MeanFlow::new(meanflow_config(JvpBackend::DoubleBackward))?)),
            Step::MeanFlowFad => Iface::Plain(Box::new(MeanFlow::new(meanflow_config(JvpBackend::ForwardAd))?)),
            Step::SctFused => Iface::Plain(Box::new(Sct::with_default_head(sct_config(JvpBackend::Fused), device)?)),
            Step::SctDb => Iface::Plain(Box::new(Sct::with_default_head(sct_config(JvpBackend::DoubleBackward), device)?)),
            Step::SctFad => Iface::Plain(Box::new(Sct::with_default_head(sct_config(JvpBackend::ForwardAd), device)?)),
            Step::Repa => {
                // REPA's projector (hidden 2048, DINOv2-B targets of 768) on DiT-XL; scaled down
                // with the network elsewhere so that it does not dominate the step.
                let (feature_dim, proj_dim) = match (net, cfg) {
                    (Net::Probe, _) => (64, 64),
                    (_, Config::BenchS) => (768, 512),
                    (_, Config::BenchXl) => (768, 2048),
                };
                let rc = RepaConfig { feature_dim, repa_loss_weight: 0.5, repa_depth: (depth / 3).max(1), proj_dim };
                let proj = Projector::init(&rc, hidden, 1, device)?;
                let t = if net == Net::Probe { dcfg.input_size * dcfg.input_size } else { tokens };
                let xf = Tensor::f_randn([batch, t, rc.feature_dim], (Kind::Float, device))?;
                Iface::Repa(Repa::new(rc, Box::new(SiT::new(SiTConfig::default())?), proj)?, xf)
            }
            Step::Net | Step::NetDt => {
                let t = Tensor::f_full([batch], 0.5, (Kind::Float, device))?;
                let dt = if step == Step::NetDt { Some(Tensor::f_full([batch], 0.25, (Kind::Float, device))?) } else { None };
                Iface::Net { t, dt }
            }
        };
        let mut params: Vec<Tensor> = net_box.parameters().into_iter().map(|(_, p)| p).collect();
        match &iface {
            Iface::Repa(r, _) => params.extend(r.parameters().into_iter().map(|(_, p)| p)),
            // sCT's log-variance head trains with the network.
            Iface::Plain(i) => params.extend(i.parameters().into_iter().map(|(_, p)| p)),
            Iface::Net { .. } => {}
        }
        Ok(TrainStep { step, net: net_box, iface, x, y, batch, params, attention: att, layer_norm: ln, tokens_per_example: tokens, forward_flops_per_example: flops, seed: 0 })
    }

    /// The scalar training loss of one step (graph attached), from fresh streams.
    pub fn loss(&mut self) -> Result<Tensor> {
        self.seed += 1;
        let s = self.seed * 3;
        let mut rngs = Rngs::new(&[("time", s), ("noise", s + 1), ("label_dropout", s + 2)])?;
        let per_example = match &self.iface {
            Iface::Plain(i) => i.loss(self.net.as_ref(), &self.x, Cond::labels(Some(&self.y)), &mut rngs)?.loss,
            Iface::Repa(r, xf) => r.loss(self.net.as_ref(), &self.x, xf, Cond::labels(Some(&self.y)), &mut rngs)?.loss,
            Iface::Net { t, dt } => {
                let o = self.net.call(&self.x, t, Cond { y: Some(&self.y), dt: dt.as_ref(), ..Cond::default() }, Pass::train(&mut rngs))?.out;
                o.f_square()?.f_mean_dim(&[1i64, 2, 3][..], false, Kind::Float)?
            }
        };
        Ok(per_example.f_mean(Kind::Float)?)
    }

    /// One training step: loss, then the gradient of every trainable parameter. Returns the
    /// (detached) loss and the gradients; nothing is read back to the host.
    pub fn run(&mut self) -> Result<(Tensor, Vec<Tensor>)> {
        let loss = self.loss()?;
        let refs: Vec<&Tensor> = self.params.iter().collect();
        let grads = Tensor::f_run_backward(&[&loss], &refs, false, false)?;
        Ok((loss.f_detach()?, grads))
    }

    /// Model FLOPs of one step (see [`Step::forward_equivalents`]); 0 for the probe.
    pub fn step_flops(&self) -> f64 {
        self.forward_flops_per_example * self.batch as f64 * self.step.forward_equivalents()
    }
}

/// Analytic forward FLOPs of one example through the DiT (2 FLOPs per multiply-add; matmuls
/// only, elementwise work ignored). With `D` hidden, `T` tokens, `r` the MLP ratio, `L` blocks,
/// `P = p^2 C` values per patch and `F` frequencies:
///
/// ```text
/// per token per block: qkv 6 D^2 + attention out 2 D^2 + MLP 4 r D^2 (= 24 D^2 at r = 4)
///                      + scores 2 T D + weighted values 2 T D          (= 4 T D)
/// per example per block: adaLN 12 D^2
/// embed + final: T (2 P D) + T (2 D P) + final adaLN 4 D^2 + each time embedder 2 (F D + D^2)
/// forward = T L (24 D^2 + 4 T D) + 12 L D^2 + 4 T P D + 4 D^2 + n_emb 2 (F D + D^2)
/// ```
///
/// A training step is ~3 forwards (forward + backward); see [`Step::forward_equivalents`].
pub fn dit_forward_flops(c: &DitConfig) -> f64 {
    let (d, t, l) = (c.hidden_size as f64, c.tokens() as f64, c.depth as f64);
    let m = c.mlp_hidden() as f64;
    let p = (c.patch_size * c.patch_size * c.in_channels) as f64;
    let f = c.freq_embed_size as f64;
    let per_token_block = 8.0 * d * d + 4.0 * d * m + 4.0 * t * d;
    let n_emb = c.embedders().len() as f64;
    t * l * per_token_block + 12.0 * l * d * d + 4.0 * t * p * d + 4.0 * d * d + n_emb * 2.0 * (f * d + d * d)
}

/// [`dit_forward_flops`] for the LightningDiT: the MLP is `3 D H` multiply-adds per token
/// with SwiGLU (`H = int(2/3 M)`), and the block's adaLN has `2 chunks D^2` of them.
pub fn lightning_forward_flops(c: &LightningDitConfig) -> f64 {
    let d_cfg = &c.dit;
    let (d, t, l) = (d_cfg.hidden_size as f64, d_cfg.tokens() as f64, d_cfg.depth as f64);
    let h = c.mlp_hidden() as f64;
    let mlp = if c.swiglu { 6.0 * d * h } else { 4.0 * d * h };
    let chunks = if c.adaln_shift { 6.0 } else { 4.0 };
    let p = (d_cfg.patch_size * d_cfg.patch_size * d_cfg.in_channels) as f64;
    let f = d_cfg.freq_embed_size as f64;
    let n_emb = d_cfg.embedders().len() as f64;
    t * l * (8.0 * d * d + mlp + 4.0 * t * d) + 2.0 * chunks * l * d * d + 4.0 * t * p * d + 4.0 * d * d + n_emb * 2.0 * (f * d + d * d)
}

/// The samplers benched, each with the interface it is used with.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SamplerKind {
    /// Euler on SiT (uniform grid).
    Euler,
    /// The reference's Heun on EDM (exp grid).
    Heun,
    /// Euler-Maruyama on SiT (linear_kl, uniform grid from 0.98).
    EulerMaruyama,
    /// Euler-jump on MeanFlow.
    EulerJump,
}

impl SamplerKind {
    pub const ALL: [SamplerKind; 4] = [SamplerKind::Euler, SamplerKind::Heun, SamplerKind::EulerMaruyama, SamplerKind::EulerJump];
    pub fn name(self) -> &'static str {
        match self {
            SamplerKind::Euler => "euler-sit",
            SamplerKind::Heun => "heun-edm",
            SamplerKind::EulerMaruyama => "euler-maruyama-sit",
            SamplerKind::EulerJump => "euler-jump-meanflow",
        }
    }
}

/// A sampler with its interface and network (eval mode, fused attention), ready to run.
pub struct SamplerBench {
    pub sampler: AnySampler,
    interface: AnyInterface,
    pub net: Box<dyn Backbone>,
    pub x: Tensor,
    pub y: Tensor,
}

impl SamplerBench {
    pub fn new(cfg: Config, net: Net, kind: SamplerKind, steps: i64, device: Device) -> Result<SamplerBench> {
        let (x, y) = data(cfg, device)?;
        let jump = kind == SamplerKind::EulerJump;
        let dcfg = cfg.dit(jump);
        let net: Box<dyn Backbone> = match net {
            Net::Probe => Box::new(ProbeMlp::init(ProbeMlpConfig { channels: dcfg.in_channels, hidden: 256, freqs: 8 }, 0, device)?),
            Net::Dit => {
                Box::new(Dit::init(dcfg, 0, device)?.with_attention(Attention::Fused).with_layer_norm(LayerNorm::Fused))
            }
            Net::Lightning => Box::new(
                LightningDit::init(LightningDitConfig::imagenet_switches(dcfg), 0, device)?.with_attention(Attention::Fused).with_layer_norm(LayerNorm::Fused),
            ),
        };
        let (sampler, interface): (AnySampler, AnyInterface) = match kind {
            SamplerKind::Euler => (AnySampler::Euler(Euler::new(SamplerConfig::new(steps, GridKind::Uniform))?), SiT::new(SiTConfig::default())?.into()),
            SamplerKind::Heun => (AnySampler::Heun(Heun::new(SamplerConfig::new(steps, GridKind::Exp), HeunOptions::default())?), Edm::new(edm_config())?.into()),
            SamplerKind::EulerMaruyama => {
                let kw = GridKwargs { t_start: Some(0.98), ..Default::default() };
                let sc = SamplerConfig { num_sampling_steps: steps, sampling_time_dist: GridKind::Uniform, sampling_time_kwargs: kw };
                (AnySampler::EulerMaruyama(EulerMaruyama::new(sc, EulerMaruyamaOptions::default())?), SiT::new(SiTConfig::default())?.into())
            }
            SamplerKind::EulerJump => (AnySampler::EulerJump(EulerJump::new(SamplerConfig::new(steps, GridKind::Uniform), EulerJumpOptions::default())?), MeanFlow::new(MeanFlowConfig::default())?.into()),
        };
        Ok(SamplerBench { sampler, interface, net, x, y })
    }

    /// One non-last step from the grid's first point to its second (no gradient).
    pub fn one_step(&self) -> Result<Tensor> {
        fn step<I: ?Sized, S: Sample<I>>(s: &S, model: Model<'_, I>, x: &Tensor, y: &Tensor) -> Result<Tensor> {
            let args = SampleArgs::new(model, None, 1.0, Some(y))?;
            let grid = s.timegrid()?;
            s.forward(&mut Rngs::with_default(0), &args, x, grid[0], grid[1])
        }
        let _ng = tch::no_grad_guard();
        let (i, net, x, y) = (&self.interface, self.net.as_ref(), &self.x, &self.y);
        let missing = || Error::invalid("interface", "one the sampler can integrate", i.name());
        match &self.sampler {
            AnySampler::Euler(s) => step(s, Model::new(i.interface(), net), x, y),
            AnySampler::Heun(s) => step(s, Model::new(i.interface(), net), x, y),
            AnySampler::EulerMaruyama(s) => step(s, Model::new(i.as_score().ok_or_else(missing)?, net), x, y),
            AnySampler::EulerJump(s) => step(s, Model::new(i.as_average_velocity().ok_or_else(missing)?, net), x, y),
        }
    }

    /// The whole sampling loop (no gradient).
    pub fn sample(&self) -> Result<Tensor> {
        let _ng = tch::no_grad_guard();
        self.sampler.sample(&mut Rngs::with_default(0), &self.interface, self.net.as_ref(), &self.x, 1.0, Some(&self.y))
    }
}

/// Waits for the device's queued work (no-op on CPU).
pub fn sync(device: Device) {
    if let Device::Cuda(i) = device {
        tch::Cuda::synchronize(i as i64);
    }
}
