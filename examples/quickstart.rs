//! The README's "Using the library" snippet, compiled and run (`cargo run --example quickstart`),
//! and its LightningDiT loading snippet, compiled (it needs a checkpoint to run).

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

/// The README's LightningDiT snippet (compiled; running it needs an ImageNet-size checkpoint).
#[allow(dead_code)]
fn lightning(path: &std::path::Path, device: tch::Device, sit: &diffuse_spec::interfaces::SiT, x: &tch::Tensor, y: &tch::Tensor) -> std::result::Result<(), Box<dyn std::error::Error>> {
use diffuse_spec::interfaces::Interface;
let mut rngs = diffuse_spec::rng::Rngs::new(&[("time", 1), ("noise", 2), ("label_dropout", 3)])?;
use diffuse_spec::networks::{Cond, LightningDit, LightningDitConfig};

let cfg: LightningDitConfig = serde_json::from_str(r#"{"input_size": 16, "patch_size": 1, "in_channels": 32,
    "hidden_size": 1152, "depth": 28, "num_heads": 16, "swiglu": true, "use_rope": true, "rms_norm": true,
    "adaln_shift": true}"#)?;
let net = LightningDit::load_safetensors(cfg, path, device)?;
// or LightningDit::load_npy_dir(cfg, dir, device) for `param.<path>.npy` files; buffers
// (`x_embedder.pe`, `feat_rope.freqs_{cos,sin}`) are computed when the file lacks them
let out = sit.loss(&net, x, Cond::labels(Some(y)), &mut rngs)?;   // any interface, any sampler
    drop(out);
    Ok(())
}
