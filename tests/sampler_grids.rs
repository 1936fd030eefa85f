//! Snapshots (insta) of the samplers' time grids for the default settings, as readable tables:
//! the index, the time as float32 (shortest round-trip decimal) and its bits.

use diffuse_spec::samplers::{Euler, GridKind, Heun, HeunOptions, Sampler, SamplerConfig};

fn table(what: &str, points: &[f32]) -> String {
    let mut s = format!("{what}\n{} points\nindex  t               bits\n", points.len());
    for (i, t) in points.iter().enumerate() {
        s.push_str(&format!("{i:>5}  {:<14}  0x{:08x}\n", format!("{t:?}"), t.to_bits()));
    }
    s
}

#[test]
fn uniform_grid_8_steps() {
    let s = Euler::new(SamplerConfig::new(8, GridKind::Uniform)).unwrap();
    insta::assert_snapshot!(table("uniform, num_sampling_steps 8, defaults (t_start 1, t_end 0, t_shift_base = t_shift_cur = 4096)", &s.timegrid().unwrap()));
}

#[test]
fn exp_grid_8_steps() {
    let s = Heun::new(SamplerConfig::new(8, GridKind::Exp), HeunOptions::default()).unwrap();
    insta::assert_snapshot!(table("exp, num_sampling_steps 8, defaults (sigma_min 0.002, sigma_max 80, rho 7); 10 points, one step more than asked (Q4)", &s.timegrid().unwrap()));
}
