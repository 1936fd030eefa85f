//! The golden suites on CUDA, when libtorch sees a GPU (skipped with a message otherwise).
//! Random streams are drawn on the host and copied, so they are bit-identical on every
//! device; everything else is held to the same per-quantity tolerances as on the CPU.
//! CI has no GPU, so these skip there (saying so); `make gpu-kit` builds them here and
//! `benches/gpu-run` runs them on a machine with one.

mod common;

use diffuse_spec::golden::{self, ReplayOptions};
use tch::Device;

fn cuda() -> Option<Device> {
    if tch::Cuda::is_available() {
        Some(Device::Cuda(0))
    } else {
        eprintln!("SKIPPED: libtorch sees no CUDA device here, so the CUDA replay did not run");
        None
    }
}

fn replay_on(root: &std::path::Path, device: Device) {
    let cases = golden::discover(root).unwrap();
    let rows: Vec<_> = cases.iter().flat_map(|c| golden::check_case_with(c, &ReplayOptions::on(device))).collect();
    common::assert_conformance(&rows, cases.len(), |_| false);
}

#[test]
fn shared_golden_cases_on_cuda() {
    let (Some(device), Some(root)) = (cuda(), common::shared_golden()) else { return };
    replay_on(&root, device);
}

#[test]
fn project_fixtures_on_cuda() {
    let Some(device) = cuda() else { return };
    replay_on(&common::fixtures(), device);
}

/// Every MeanFlow / sCT / sCD fixture and shared case replayed on CUDA with the fused JVP
/// explicitly (the cases name their own autograd backend), all quantities within tolerance.
#[test]
fn jvp_cases_on_cuda_with_the_fused_jvp() {
    let Some(device) = cuda() else { return };
    let mut roots = vec![common::fixtures()];
    roots.extend(common::shared_golden());
    roots.extend(common::shared_set("lightning"));
    let opts = ReplayOptions { device, jvp: Some(diffuse_spec::jvp::JvpBackend::Fused) };
    for root in roots {
        let cases: Vec<_> = golden::discover(&root).unwrap().into_iter().filter(|p| {
            let c = golden::Case::open(p).unwrap();
            c.header.interface.is_some_and(|i| i.jvp_based()) && matches!(c.kind, golden::CaseKind::Loss | golden::CaseKind::Grad)
        }).collect();
        let rows: Vec<_> = cases.iter().flat_map(|c| golden::check_case_with(c, &opts)).collect();
        common::assert_conformance(&rows, cases.len(), |_| false);
    }
}

/// The fused JVP of a DiT and a LightningDiT built with `Attention::Fused` on CUDA: the
/// primal runs libtorch's SDPA (flash / memory-efficient kernels, which have no forward-AD
/// formula) and the tangent agrees with double backward through the math kernel to 1e-4
/// relative in float32.
#[test]
fn fused_jvp_on_cuda_keeps_the_fused_attention_kernel() {
    use diffuse_spec::jvp::{network_jvp, JvpBackend, NetTangents};
    use diffuse_spec::networks::{Attention, Backbone, Cond, Dit, DitConfig, LightningDit, LightningDitConfig, Pass};
    use tch::{Kind, Tensor};
    let Some(device) = cuda() else { return };
    let cfg = DitConfig { input_size: 16, patch_size: 2, in_channels: 4, hidden_size: 128, depth: 2, num_heads: 2, take_dt: true, ..DitConfig::default() };
    let dit = Dit::init(cfg.clone(), 0, device).unwrap().with_attention(Attention::Fused);
    let light = LightningDit::init(LightningDitConfig::imagenet_switches(cfg), 0, device).unwrap().with_attention(Attention::Fused);
    let nets: [(&str, &dyn Backbone); 2] = [("DiT", &dit), ("LightningDiT", &light)];
    let opts = (Kind::Float, device);
    let x = Tensor::randn([4, 16, 16, 4], opts);
    let (t, dt) = (Tensor::rand([4], opts), Tensor::rand([4], opts) * 0.5);
    let y = Tensor::from_slice(&[1i64, 2, 3, 4]).to_device(device);
    let (vx, vt, vdt) = (x.randn_like(), t.ones_like(), t.ones_like());
    let cond = Cond { y: Some(&y), dt: Some(&dt), ..Cond::default() };
    for (name, net) in nets {
        // The init zeroes the gates and final layer; randomise them so the derivative is not 0.
        for (k, p) in net.parameters() {
            if k.contains("adaLN") || k.starts_with("final_layer") {
                tch::no_grad(|| p.shallow_clone().copy_(&(p.randn_like() * 0.05)));
            }
        }
        let tan = NetTangents { x: &vx, t: &vt, dt: Some(&vdt) };
        let (_, a) = network_jvp(JvpBackend::Fused, net, &x, &t, cond, tan, Pass::eval()).unwrap();
        let (_, b) = network_jvp(JvpBackend::DoubleBackward, net, &x, &t, cond, tan, Pass::eval()).unwrap();
        let e = ((&a - &b).abs().max().double_value(&[])) / b.abs().max().double_value(&[]).max(1e-30);
        println!("{name} on CUDA: fused JVP (SDPA primal) vs double backward (math kernel) {e:.2e}");
        assert!(e < 1e-4, "{name}: {e:.2e}");
    }
}
