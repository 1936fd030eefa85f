//! REPA: representation alignment (Yu et al., "Representation Alignment for Generation:
//! Training Diffusion Transformers Is Easier Than You Think", ICLR 2025), wrapping any
//! [`Interface`], as diffuse_nnx's `interfaces/repa.py` computes it.
//!
//! With the wrapped interface's per-example loss and features (one loss call: every draw
//! of the interface and the network happens there, in that interface's order):
//!
//! ```text
//! f          = features[repa_depth - 1]                                    # [B, T, hidden]
//! proj       = Linear(hidden, proj) - SiLU - Linear(proj, proj) - SiLU - Linear(proj, feature_dim) (f)
//! cos        = sum(x_feature / |x_feature| * proj / |proj|, -1)          # norms over the last axis
//! repa_loss  = mean over T of -cos                                         # [B]
//! loss       = diffusion_loss + repa_loss_weight * repa_loss               # [B]
//! ```
//!
//! The projector's parameters are `projector.layers.{0,2,4}.{kernel [in, out], bias [out]}`
//! (an `nnx.Sequential`, so the Linears sit at indices 0, 2, 4). The normalisation has no
//! epsilon, as in the reference (`x / jnp.linalg.norm(x)`): an all-zero feature vector gives
//! NaN there and here. Gradients flow through both parts of the loss into the network and
//! the projector; `x_feature` (the frozen encoder's features) is a constant.

use std::collections::BTreeMap;

use serde::Deserialize;
use tch::{Device, Kind, Tensor};

use super::{mean_flat, Interface, LossOutput};
use crate::encoders::FeatureEncoder;
use crate::error::{Error, Result};
use crate::networks::weights::check_names_and_shapes;
use crate::networks::{Backbone, Cond};
use crate::rng::Rngs;

/// The path prefix of the projector's parameters (`projector.layers.0.kernel`, ...).
pub const PROJECTOR_PREFIX: &str = "projector.";

/// The indices of the projector's Linear layers in its `nnx.Sequential`.
const LAYERS: [i64; 3] = [0, 2, 4];

/// Settings of [`Repa`], with the reference's names.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RepaConfig {
    /// Width of the target features `x_feature` (the pretrained encoder's, e.g. 768 for DINOv2-B).
    pub feature_dim: i64,
    /// Weight of the alignment loss in the total loss.
    pub repa_loss_weight: f64,
    /// Which block's features are aligned, 1-based (`features[repa_depth - 1]`).
    pub repa_depth: i64,
    /// Hidden width of the projector MLP.
    pub proj_dim: i64,
}

impl RepaConfig {
    /// Returns the settings if valid: `feature_dim`, `proj_dim`, `repa_depth` at least 1 and a
    /// finite `repa_loss_weight`.
    pub fn validated(self) -> Result<RepaConfig> {
        for (name, v) in [("feature_dim", self.feature_dim), ("proj_dim", self.proj_dim), ("repa_depth", self.repa_depth)] {
            if v < 1 {
                return Err(Error::invalid(name, "at least 1", v));
            }
        }
        if !self.repa_loss_weight.is_finite() {
            return Err(Error::invalid("repa_loss_weight", "a finite weight", self.repa_loss_weight));
        }
        Ok(self)
    }

    /// The projector's parameter paths (without the `projector.` prefix) and shapes for
    /// features of width `hidden`.
    pub fn projector_shapes(&self, hidden: i64) -> Vec<(String, Vec<i64>)> {
        let dims = [(hidden, self.proj_dim), (self.proj_dim, self.proj_dim), (self.proj_dim, self.feature_dim)];
        let mut s = Vec::new();
        for (i, (a, b)) in LAYERS.iter().zip(dims) {
            s.push((format!("layers.{i}.kernel"), vec![a, b]));
            s.push((format!("layers.{i}.bias"), vec![b]));
        }
        s.sort();
        s
    }
}

/// The REPA projector MLP; parameters are leaf tensors that require gradients.
#[derive(Debug)]
pub struct Projector {
    hidden: i64,
    params: BTreeMap<String, Tensor>,
}

impl Projector {
    /// Builds the projector for features of width `hidden` from parameters keyed
    /// `layers.<i>.kernel` / `layers.<i>.bias` (a `projector.` prefix is accepted and
    /// stripped). A missing, extra or mis-shaped parameter is an error naming it.
    pub fn from_params(cfg: &RepaConfig, hidden: i64, params: BTreeMap<String, Tensor>) -> Result<Projector> {
        if hidden < 1 {
            return Err(Error::invalid("hidden", "at least 1", hidden));
        }
        let params: BTreeMap<String, Tensor> =
            params.into_iter().map(|(k, v)| (k.strip_prefix(PROJECTOR_PREFIX).map(str::to_string).unwrap_or(k), v)).collect();
        check_names_and_shapes("projector parameter", &cfg.projector_shapes(hidden), &params)?;
        let mut out = BTreeMap::new();
        for (k, v) in params {
            out.insert(k, v.f_to_kind(Kind::Float)?.f_detach()?.set_requires_grad(true));
        }
        Ok(Projector { hidden, params: out })
    }

    /// A fresh projector (torch's generator seeded with `seed`): kernels LeCun-normal
    /// `N(0, 1/fan_in)` (Flax's `nnx.Linear` default draws a truncated normal of that
    /// variance), biases zero.
    pub fn init(cfg: &RepaConfig, hidden: i64, seed: i64, device: Device) -> Result<Projector> {
        tch::manual_seed(seed);
        let mut params = BTreeMap::new();
        for (name, shape) in cfg.projector_shapes(hidden.max(1)) {
            let t = if shape.len() == 2 {
                Tensor::f_randn(&shape, (Kind::Float, device))?.f_mul_scalar((shape[0] as f64).sqrt().recip())?
            } else {
                Tensor::f_zeros(&shape, (Kind::Float, device))?
            };
            params.insert(name, t);
        }
        Projector::from_params(cfg, hidden, params)
    }

    /// Applies the MLP over the last axis of `f` (`[..., hidden]` -> `[..., feature_dim]`).
    pub fn forward(&self, f: &Tensor) -> Result<Tensor> {
        let last = f.size().last().copied();
        if last != Some(self.hidden) {
            return Err(Error::invalid("features", format!("last axis of width {} (the projector's input)", self.hidden), format!("shape {:?}", f.size())));
        }
        let mut h = f.shallow_clone();
        for (j, i) in LAYERS.iter().enumerate() {
            h = h.f_matmul(&self.params[&format!("layers.{i}.kernel")])?.f_add(&self.params[&format!("layers.{i}.bias")])?;
            if j + 1 < LAYERS.len() {
                h = h.f_silu()?;
            }
        }
        Ok(h)
    }

    /// The parameters with their full paths (`projector.layers.0.kernel`, ...).
    pub fn parameters(&self) -> Vec<(String, Tensor)> {
        self.params.iter().map(|(k, v)| (format!("{PROJECTOR_PREFIX}{k}"), v.shallow_clone())).collect()
    }
}

/// What one REPA loss call computed (all per example, `[B]`).
#[derive(Debug)]
pub struct RepaLossOutput {
    /// `diffusion_loss + repa_loss_weight * repa_loss`.
    pub loss: Tensor,
    /// The wrapped interface's loss.
    pub diffusion_loss: Tensor,
    /// The alignment loss, `mean over T of -cos`.
    pub repa_loss: Tensor,
    /// Everything the wrapped interface's loss call returned.
    pub inner: LossOutput,
}

/// The REPA wrapper around an interface.
pub struct Repa {
    cfg: RepaConfig,
    interface: Box<dyn Interface>,
    projector: Projector,
}

impl std::fmt::Debug for Repa {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Repa").field("cfg", &self.cfg).field("interface", &self.interface.name()).field("projector", &self.projector).finish()
    }
}

impl Repa {
    /// Wraps `interface` with the alignment loss of `cfg` and `projector`.
    pub fn new(cfg: RepaConfig, interface: Box<dyn Interface>, projector: Projector) -> Result<Repa> {
        let cfg = cfg.validated()?;
        Ok(Repa { cfg, interface, projector })
    }

    /// The settings.
    pub fn config(&self) -> &RepaConfig {
        &self.cfg
    }

    /// The wrapped interface (sampling goes through it: REPA's `pred` / `score` are its).
    pub fn interface(&self) -> &(dyn Interface + 'static) {
        self.interface.as_ref()
    }

    /// The wrapped interface's per-step hook ([`Interface::on_step`]).
    pub fn on_step(&mut self, step: u64) {
        self.interface.on_step(step);
    }

    /// The projector.
    pub fn projector(&self) -> &Projector {
        &self.projector
    }

    /// The wrapper's own trainable parameters (`projector.*`).
    pub fn parameters(&self) -> Vec<(String, Tensor)> {
        self.projector.parameters()
    }

    /// The alignment loss `mean over T of -cos(x_feature, projector(features[repa_depth - 1]))`
    /// per example, `x_feature` being `[B, T, feature_dim]`.
    pub fn repa_loss(&self, features: &[Tensor], x_feature: &Tensor) -> Result<Tensor> {
        let depth = self.cfg.repa_depth as usize;
        let f = features.get(depth - 1).ok_or_else(|| {
            Error::invalid("repa_depth", format!("at most the network's {} feature blocks", features.len()), depth)
        })?;
        let fs = f.size();
        if fs.len() != 3 {
            return Err(Error::invalid("features", "shape [B, T, hidden]", format!("{fs:?}")));
        }
        let want = [fs[0], fs[1], self.cfg.feature_dim];
        if x_feature.size() != want {
            return Err(Error::invalid("x_feature", format!("shape {want:?}"), format!("{:?}", x_feature.size())));
        }
        let proj = self.projector.forward(f)?;
        let unit = |v: &Tensor| -> Result<Tensor> {
            let norm = v.f_square()?.f_sum_dim_intlist(&[-1i64][..], true, Kind::Float)?.f_sqrt()?;
            Ok(v.f_div(&norm)?)
        };
        let xf = unit(&x_feature.f_to_kind(Kind::Float)?)?;
        let cos = xf.f_mul(&unit(&proj)?)?.f_sum_dim_intlist(&[-1i64][..], false, Kind::Float)?;
        mean_flat(&cos.f_neg()?)
    }

    /// The REPA loss on data `x` with target features `x_feature` (`[B, T, feature_dim]`, from
    /// a frozen encoder) and conditioning `cond`: one call of the wrapped interface's loss,
    /// then the alignment loss on its features.
    pub fn loss(&self, net: &dyn Backbone, x: &Tensor, x_feature: &Tensor, cond: Cond<'_>, rngs: &mut Rngs) -> Result<RepaLossOutput> {
        let inner = self.interface.loss(net, x, cond, rngs)?;
        let repa_loss = self.repa_loss(&inner.features, x_feature)?;
        let diffusion_loss = inner.loss.shallow_clone();
        let loss = diffusion_loss.f_add(&repa_loss.f_mul_scalar(self.cfg.repa_loss_weight)?)?;
        Ok(RepaLossOutput { loss, diffusion_loss, repa_loss, inner })
    }

    /// [`Repa::loss`] with the target features made from `images` (`[B, H, W, 3]`, as the
    /// detector takes them) by `encoder`, run under `no_grad` (the detector is frozen):
    /// images -> features -> REPA loss on `x` (the backbone's input, e.g. the images' latents)
    /// in one call, with conditioning `cond` (labels, extra inputs) as in [`Repa::loss`]. The encoder's `feature_dim` must be the configuration's, and its token
    /// count the backbone's (checked by [`Repa::repa_loss`]).
    pub fn loss_from_images(
        &self,
        net: &dyn Backbone,
        x: &Tensor,
        images: &Tensor,
        encoder: &dyn FeatureEncoder,
        cond: Cond<'_>,
        rngs: &mut Rngs,
    ) -> Result<RepaLossOutput> {
        if encoder.feature_dim() != self.cfg.feature_dim {
            return Err(Error::invalid("encoder", format!("features of width feature_dim = {}", self.cfg.feature_dim), format!("width {}", encoder.feature_dim())));
        }
        let x_feature = tch::no_grad(|| encoder.encode(images))?;
        self.loss(net, x, &x_feature, cond, rngs)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cfg() -> RepaConfig {
        RepaConfig { feature_dim: 3, repa_loss_weight: 0.5, repa_depth: 1, proj_dim: 5 }
    }

    #[test]
    fn config_and_projector_checks() {
        assert!(RepaConfig { repa_depth: 0, ..cfg() }.validated().is_err());
        assert!(RepaConfig { repa_loss_weight: f64::NAN, ..cfg() }.validated().is_err());
        let p = Projector::init(&cfg(), 4, 0, Device::Cpu).unwrap();
        let names: Vec<String> = p.parameters().into_iter().map(|(k, _)| k).collect();
        assert_eq!(names[0], "projector.layers.0.bias");
        assert_eq!(names.len(), 6);
        let mut params: BTreeMap<String, Tensor> = p.parameters().into_iter().collect();
        params.insert("projector.layers.2.kernel".into(), Tensor::zeros([5, 4], (Kind::Float, Device::Cpu)));
        let e = Projector::from_params(&cfg(), 4, params).unwrap_err().to_string();
        assert!(e.contains("projector parameter layers.2.kernel") && e.contains("[5, 5]"), "{e}");
    }

    #[test]
    fn aligned_features_give_minus_one() {
        // A projector that is the identity up to a positive scale on its output makes cos = 1
        // when x_feature is the (projected) features themselves.
        let c = RepaConfig { feature_dim: 2, repa_loss_weight: 1.0, repa_depth: 1, proj_dim: 2 };
        let p = Projector::init(&c, 2, 1, Device::Cpu).unwrap();
        let f = Tensor::randn([2, 3, 2], (Kind::Float, Device::Cpu));
        let target = p.forward(&f).unwrap().detach() * 2.0;
        let r = Repa::new(c, Box::new(crate::interfaces::SiT::new(Default::default()).unwrap()), p).unwrap();
        let l = r.repa_loss(&[f], &target).unwrap();
        assert!(l.allclose(&Tensor::full([2], -1.0, (Kind::Float, Device::Cpu)), 1e-6, 1e-6, false));
    }
}
