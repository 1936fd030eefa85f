//! REPA end to end (`cargo run --example repa_dino`): images -> DINOv2 features -> REPA loss
//! on a DiT, one call per step, and a few SGD steps on the DiT and the projector.
//!
//! Everything is tiny and random so that it runs in seconds on a CPU: a 1-layer, 32-wide
//! DINOv2 ([`Dino::init`]; load `facebook/dinov2-base` with `load_hf_safetensors` for real
//! features), a 2-block DiT on 32 x 32 x 3 "latents" (here the images average-pooled by 8,
//! standing in for a VAE), SiT as the interface. A 256 x 256 image gives 16 x 16 DINO
//! tokens, the DiT's 32 / 2 = 16 x 16 patches: the token counts match, as REPA needs.

use diffuse_spec::encoders::{Dino, DinoConfig, FeatureEncoder};
use diffuse_spec::interfaces::{Projector, Repa, RepaConfig, SiT, SiTConfig};
use diffuse_spec::networks::{Backbone, Cond, Dit, DitConfig};
use diffuse_spec::rng::Rngs;
use diffuse_spec::Result;
use tch::{Device, Kind, Tensor};

/// A batch of smooth random images `[B, 256, 256, 3]` in `[-1, 1]`: 8 x 8 noise, upsampled.
fn images(batch: i64, seed: i64) -> Result<Tensor> {
    tch::manual_seed(seed);
    let coarse = Tensor::f_rand([batch, 3, 8, 8], (Kind::Float, Device::Cpu))?.f_mul_scalar(2.0)?.f_sub_scalar(1.0)?;
    let fine = coarse.f_upsample_bilinear2d([256, 256], false, None, None)?;
    Ok(fine.f_permute([0, 2, 3, 1])?.f_contiguous()?)
}

fn main() -> Result<()> {
    let dev = Device::Cpu;
    let dino = Dino::init(DinoConfig { hidden_size: 32, num_hidden_layers: 1, num_attention_heads: 2, ..DinoConfig::default() }, 0, dev)?;
    let dit_cfg = DitConfig {
        input_size: 32,
        patch_size: 2,
        in_channels: 3,
        hidden_size: 32,
        depth: 2,
        num_heads: 2,
        mlp_ratio: 2.0,
        freq_embed_size: 32,
        num_classes: 10,
        ..DitConfig::default()
    };
    let dit = Dit::init(dit_cfg, 1, dev)?;
    let repa_cfg = RepaConfig { feature_dim: dino.feature_dim(), repa_loss_weight: 0.5, repa_depth: 1, proj_dim: 64 };
    let projector = Projector::init(&repa_cfg, 32, 2, dev)?;
    let repa = Repa::new(repa_cfg, Box::new(SiT::new(SiTConfig::default())?), projector)?;
    let mut rngs = Rngs::new(&[("time", 1), ("noise", 2), ("label_dropout", 3)])?;

    let img = images(4, 7)?;
    let latents = img.f_permute([0, 3, 1, 2])?.f_avg_pool2d([8, 8], [8, 8], [0, 0], false, true, None::<i64>)?.f_permute([0, 2, 3, 1])?.f_contiguous()?;
    let y = Tensor::f_from_slice(&[0i64, 3, 5, 9])?;
    println!("images {:?} -> DINO features {:?}; latents {:?}", img.size(), dino.encode(&img)?.size(), latents.size());

    let mut params: Vec<Tensor> = dit.parameters().into_iter().map(|(_, p)| p).collect();
    params.extend(repa.parameters().into_iter().map(|(_, p)| p));
    let lr = 0.05;
    let mut first = None;
    let mut last = 0.0;
    for step in 0..8 {
        let out = repa.loss_from_images(&dit, &latents, &img, &dino, Cond::labels(Some(&y)), &mut rngs)?;
        let (l, d, r) = (mean(&out.loss)?, mean(&out.diffusion_loss)?, mean(&out.repa_loss)?);
        println!("step {step}: loss {l:.4}  diffusion {d:.4}  repa (mean -cos) {r:.4}");
        first.get_or_insert(r);
        last = r;
        out.loss.f_mean(Kind::Float)?.f_backward()?;
        tch::no_grad(|| -> Result<()> {
            for p in params.iter_mut() {
                let g = p.grad();
                if g.defined() {
                    let _ = p.f_sub_(&g.f_mul_scalar(lr)?)?;
                }
                p.zero_grad();
            }
            Ok(())
        })?;
    }
    println!("repa loss {:.4} -> {last:.4} over 8 steps (the projector and the DiT align to DINO's features)", first.unwrap_or(0.0));
    Ok(())
}

fn mean(t: &Tensor) -> Result<f64> {
    Ok(t.f_mean(Kind::Float)?.f_double_value(&[])?)
}
