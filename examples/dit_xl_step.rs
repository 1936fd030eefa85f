//! One SiT training step (loss + backward) through a freshly initialised DiT-XL/2
//! (hidden 1152, depth 28, 16 heads, patch 2, on 32x32x4 latents: `DitConfig::default()`),
//! batch 1 by default, timing each part.
//!
//! ```text
//! cargo run --release --example dit_xl_step -- [--device cpu|cuda] [--batch N] [--fused]
//! ```

use std::time::Instant;

use diffuse_spec::golden::parse_device;
use diffuse_spec::interfaces::{Interface, SiT, SiTConfig};
use diffuse_spec::networks::{Attention, Backbone, Cond, Dit, DitConfig};
use diffuse_spec::rng::Rngs;
use tch::{Kind, Tensor};

fn main() -> diffuse_spec::Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let arg = |name: &str| args.iter().position(|a| a == name).and_then(|i| args.get(i + 1)).cloned();
    let device = parse_device(&arg("--device").unwrap_or_else(|| "cpu".into()))?;
    let batch: i64 = arg("--batch").and_then(|b| b.parse().ok()).unwrap_or(1);

    let cfg = DitConfig::default();
    println!("DiT-XL/2: {} parameters, {} tokens, device {device:?}, batch {batch}", cfg.num_parameters(), cfg.tokens());
    let t0 = Instant::now();
    let mut dit = Dit::init(cfg.clone(), 0, device)?;
    if args.iter().any(|a| a == "--fused") {
        dit.set_attention(Attention::Fused);
    }
    println!("init: {:.2} s", t0.elapsed().as_secs_f64());

    let sit = SiT::new(SiTConfig::default())?;
    let x = Tensor::f_randn([batch, cfg.input_size, cfg.input_size, cfg.in_channels], (Kind::Float, device))?;
    let y = Tensor::f_arange(batch, (Kind::Int64, device))?;
    for step in 0..2 {
        let mut rngs = Rngs::new(&[("time", 1), ("noise", 2), ("label_dropout", 3)])?;
        for (_, p) in dit.parameters() {
            let mut g = p.grad();
            if g.defined() {
                let _ = g.f_zero_()?;
            }
        }
        let t1 = Instant::now();
        let o = sit.loss(&dit, &x, Cond::labels(Some(&y)), &mut rngs)?;
        let loss = o.loss.f_mean(Kind::Float)?;
        let lv = loss.f_double_value(&[])?;
        let t2 = Instant::now();
        loss.f_backward()?;
        let gnorm: f64 = dit.parameters().iter().map(|(_, p)| p.grad()).filter(|g| g.defined()).map(|g| g.square().sum(Kind::Double).double_value(&[])).sum::<f64>().sqrt();
        if device.is_cuda() {
            tch::Cuda::synchronize(0);
        }
        let t3 = Instant::now();
        println!(
            "step {step}: loss {lv:.6}, |grad| {gnorm:.4e}, forward {:.2} s, backward {:.2} s, step {:.2} s",
            (t2 - t1).as_secs_f64(),
            (t3 - t2).as_secs_f64(),
            (t3 - t1).as_secs_f64()
        );
    }
    Ok(())
}
