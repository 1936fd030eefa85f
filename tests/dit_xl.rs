//! A DiT-XL/2-sized model (hidden 1152, depth 28, 16 heads, patch 2, 32x32x4 input; about
//! 675M parameters) builds and runs one SiT loss step and backward on CPU with batch 1.
//!
//! Ignored by default: on a 2-core machine it takes about 2 minutes (init ~25 s, step
//! 70-110 s), over the ~60 s budget of the default suite. Run it with
//! `cargo test --test dit_xl -- --ignored`, or time it with the `dit_xl_step` example.

use diffuse_spec::interfaces::{Interface, SiT, SiTConfig};
use diffuse_spec::networks::{Backbone, Cond, Dit, DitConfig};
use diffuse_spec::rng::Rngs;
use tch::{Device, Kind, Tensor};

#[test]
#[ignore = "about 2 minutes on 2 CPU cores; see the dit_xl_step example"]
fn dit_xl_2_sit_step_on_cpu() {
    let cfg = DitConfig::default();
    assert_eq!((cfg.hidden_size, cfg.depth, cfg.num_heads, cfg.patch_size, cfg.input_size, cfg.in_channels), (1152, 28, 16, 2, 32, 4));
    let dit = Dit::init(cfg, 0, Device::Cpu).unwrap();
    let sit = SiT::new(SiTConfig::default()).unwrap();
    let x = Tensor::randn([1, 32, 32, 4], (Kind::Float, Device::Cpu));
    let y = Tensor::from_slice(&[7i64]);
    let mut rngs = Rngs::new(&[("time", 1), ("noise", 2), ("label_dropout", 3)]).unwrap();
    let o = sit.loss(&dit, &x, Cond::labels(Some(&y)), &mut rngs).unwrap();
    assert_eq!(o.features.len(), 28);
    let loss = o.loss.mean(Kind::Float);
    assert!(loss.double_value(&[]).is_finite());
    loss.backward();
    // adaLN-Zero: the final layer's gradients are the first to be non-zero.
    let params: std::collections::BTreeMap<String, Tensor> = dit.parameters().into_iter().collect();
    let g = params["final_layer.linear.kernel"].grad();
    assert!(g.defined() && g.abs().sum(Kind::Float).double_value(&[]) > 0.0);
}
