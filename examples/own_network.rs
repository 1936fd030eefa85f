//! A user's own network as a backbone: the README's "Your own network" example, compiled by
//! `cargo test` and run by `tests/docs_own_network.rs`. `cargo run --example own_network`.
//!
//! A two-layer `tch::nn` MLP on `[x, t]` (made a backbone by `VarStoreBackbone`, its
//! parameters by VarStore path), trained with SiT on 2-D points from `N(2, 0.5^2 I)`, then
//! sampled with Euler.

use diffuse_spec::interfaces::{Interface, SiT, SiTConfig};
use diffuse_spec::networks::{Cond, VarStoreBackbone};
use diffuse_spec::rng::Rngs;
use diffuse_spec::samplers::{Euler, GridKind, Model, Sample, SamplerConfig};
use diffuse_spec::Result;
use tch::nn::{self, Module, OptimizerConfig};
use tch::{Device, Kind, Tensor};

/// Trains the network for `steps` Adam steps and returns 1024 samples.
pub fn own_network(steps: usize) -> Result<Tensor> {
    let vs = nn::VarStore::new(Device::Cpu);
    let (l1, l2) = (nn::linear(vs.root() / "l1", 3, 64, Default::default()), nn::linear(vs.root() / "l2", 64, 2, Default::default()));
    let net = VarStoreBackbone::new(vs, move |x, t, _cond, _pass| Ok(l2.forward(&l1.forward(&Tensor::cat(&[x, &t.unsqueeze(-1)], -1)).silu())));
    let sit = SiT::new(SiTConfig { t_shift_base: 2.0, ..Default::default() })?; // 2 values per example: no time shift
    let mut opt = nn::Adam::default().build(net.var_store(), 1e-2)?;
    let mut rngs = Rngs::new(&[("data", 0), ("time", 1), ("noise", 2)])?;
    for _ in 0..steps {
        let x = rngs.normal("data", &[256, 2], Device::Cpu)? * 0.5 + 2.0; // the data: N(2, 0.5^2 I)
        opt.backward_step(&sit.loss(&net, &x, Cond::none(), &mut rngs)?.loss.mean(Kind::Float));
    }
    let euler = Euler::new(SamplerConfig::new(32, GridKind::Uniform))?;
    let noise = rngs.normal("noise", &[1024, 2], Device::Cpu)?;
    tch::no_grad(|| euler.sample(&mut Rngs::with_default(3), Model::new(&sit, &net), &noise, None, 1.0, None))
}

pub fn main() -> Result<()> {
    let s = own_network(300)?;
    let mean = Vec::<f64>::try_from(s.mean_dim(0, false, Kind::Double))?;
    let std = Vec::<f64>::try_from(s.std_dim(0, true, false).to_kind(Kind::Double))?;
    println!("samples: mean {mean:.3?} (data: [2, 2]), std {std:.3?} (data: [0.5, 0.5])");
    Ok(())
}
