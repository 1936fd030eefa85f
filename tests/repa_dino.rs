//! REPA end to end with a feature detector: `Repa::loss_from_images` is `Repa::loss` on the
//! detector's features, computed without a graph; mismatched detectors are errors.

use diffuse_spec::encoders::{Dino, DinoConfig, FeatureEncoder};
use diffuse_spec::interfaces::{Projector, Repa, RepaConfig, SiT, SiTConfig};
use diffuse_spec::networks::{Cond, Dit, DitConfig};
use diffuse_spec::rng::Rngs;
use tch::{Device, Kind, Tensor};

fn setup(feature_dim: i64) -> (Dino, Dit, Repa) {
    let dino = Dino::init(DinoConfig { hidden_size: 16, num_hidden_layers: 1, num_attention_heads: 2, ..DinoConfig::default() }, 0, Device::Cpu).unwrap();
    let dit = Dit::init(
        DitConfig { input_size: 32, patch_size: 2, in_channels: 3, hidden_size: 16, depth: 1, num_heads: 2, mlp_ratio: 2.0, freq_embed_size: 8, num_classes: 4, ..DitConfig::default() },
        1,
        Device::Cpu,
    )
    .unwrap();
    let cfg = RepaConfig { feature_dim, repa_loss_weight: 0.5, repa_depth: 1, proj_dim: 8 };
    let proj = Projector::init(&cfg, 16, 2, Device::Cpu).unwrap();
    let repa = Repa::new(cfg, Box::new(SiT::new(SiTConfig::default()).unwrap()), proj).unwrap();
    (dino, dit, repa)
}

fn rngs() -> Rngs {
    Rngs::new(&[("time", 1), ("noise", 2), ("label_dropout", 3)]).unwrap()
}

#[test]
fn loss_from_images_is_the_loss_on_the_detectors_features() {
    let (dino, dit, repa) = setup(16);
    tch::manual_seed(5);
    let images = (Tensor::rand([2, 256, 256, 3], (Kind::Float, Device::Cpu)) * 2.0 - 1.0).set_requires_grad(true);
    let x = Tensor::randn([2, 32, 32, 3], (Kind::Float, Device::Cpu));
    let a = repa.loss_from_images(&dit, &x, &images, &dino, Cond::none(), &mut rngs()).unwrap();
    let feats = dino.encode(&images.detach()).unwrap();
    let b = repa.loss(&dit, &x, &feats, Cond::none(), &mut rngs()).unwrap();
    assert!(a.loss.equal(&b.loss), "{:?} vs {:?}", a.loss, b.loss);
    assert!(a.repa_loss.equal(&b.repa_loss));
    // the detector runs without a graph: nothing flows back to the images
    a.loss.mean(Kind::Float).backward();
    assert!(!images.grad().defined(), "gradient reached the images");
    let g = dit.weights().params["x_proj.kernel"].grad();
    assert!(g.defined() && g.abs().max().double_value(&[]) > 0.0);
}

#[test]
fn mismatched_detectors_are_errors() {
    // feature width
    let (dino, dit, repa) = setup(12);
    let x = Tensor::randn([1, 32, 32, 3], (Kind::Float, Device::Cpu));
    let img = Tensor::zeros([1, 256, 256, 3], (Kind::Float, Device::Cpu));
    let e = repa.loss_from_images(&dit, &x, &img, &dino, Cond::none(), &mut rngs()).unwrap_err().to_string();
    assert!(e.contains("feature_dim = 12") && e.contains("width 16"), "{e}");
    // token count: a 512 image gives 32 x 32 DINO tokens against the DiT's 16 x 16
    let (dino, dit, repa) = setup(16);
    let img = Tensor::zeros([1, 512, 512, 3], (Kind::Float, Device::Cpu));
    let e = repa.loss_from_images(&dit, &x, &img, &dino, Cond::none(), &mut rngs()).unwrap_err().to_string();
    assert!(e.contains("x_feature") && e.contains("1024"), "{e}");
    // an image the detector refuses (Q19)
    let img = Tensor::zeros([1, 128, 128, 3], (Kind::Float, Device::Cpu));
    let e = repa.loss_from_images(&dit, &x, &img, &dino, Cond::none(), &mut rngs()).unwrap_err().to_string();
    assert!(e.contains("Q19"), "{e}");
}
