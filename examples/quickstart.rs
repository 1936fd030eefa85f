//! The README's "Using the library" snippet, compiled and run (`cargo run --example quickstart`).

use diffuse_spec::Result;

fn main() -> Result<()> {
    let x = tch::Tensor::randn([8, 4, 4, 4], (tch::Kind::Float, tch::Device::Cpu));
    let y = tch::Tensor::from_slice(&[0i64, 1, 2, 3, 4, 5, 6, 7]);
    quickstart(&x, &y)?;
    Ok(())
}

fn quickstart(x: &tch::Tensor, y: &tch::Tensor) -> Result<()> {
use diffuse_spec::interfaces::{Interface, SiT, SiTConfig};
use diffuse_spec::networks::{Cond, ProbeMlp, ProbeMlpConfig};
use diffuse_spec::rng::Rngs;

let sit = SiT::new(SiTConfig::default())?;                     // reference defaults
let net = ProbeMlp::init(ProbeMlpConfig { channels: 4, hidden: 32, freqs: 8 }, 0, tch::Device::Cpu)?;
let mut rngs = Rngs::new(&[("time", 1), ("noise", 2), ("label_dropout", 3)])?;  // nnx.Rngs(time=1, ...)
let out = sit.loss(&net, x, Cond::labels(Some(y)), &mut rngs)?; // per-example loss + t, n, x_t, target, ...
out.loss.mean(tch::Kind::Float).backward();
    println!("per-example loss: {:?}", Vec::<f32>::try_from(&out.loss.detach()).unwrap_or_default());
    Ok(())
}
