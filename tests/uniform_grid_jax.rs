//! The uniform time grid against jax's, exactly where the crate claims bit-identity.
//!
//! The expected values are `tests/data/uniform_grid_jax-0.5.1.txt`, written by
//! `spec/scripts/uniform_grid_table.py` with jax 0.5.1 / jaxlib 0.5.1 on an x86-64 CPU: the
//! reference sampler's grid (`jnp.linspace` of the float32 bounds, then the resolution shift
//! op by op), as FNV-1a digests of the float32 bits, and two long grids bit by bit.
//!
//! What the data show, and this test pins:
//! - up to 224 points (`num_sampling_steps <= 223`), and whenever `steps - 1` is a power of
//!   two (`i / (steps - 1)` is then exact), the crate's grid is jax's bit for bit;
//! - from 225 points XLA's CPU backend compiles `linspace` into a vectorised loop of 8 lanes
//!   whose body fuses `1 - i / (steps - 1)` into a fused multiply-add; the last
//!   `(steps - 1) mod 8` points (the scalar remainder) and the end point are computed as for
//!   short grids. The crate keeps the scalar arithmetic (the vectorisation is a choice of the
//!   code generator, by trip count and vector width, not of the reference), so its grid then
//!   differs in the vector body by rounding: at 1001 points in 417 points, by up to 215 ulp
//!   (near t = 0, where the grid's spacing is large against the values).

use std::path::Path;

use diffuse_spec::samplers::{TimeGrid, UniformGrid};

const TABLE: &str = "tests/data/uniform_grid_jax-0.5.1.txt";

#[derive(Debug, Clone, Copy)]
struct Settings {
    t_start: f64,
    t_end: f64,
    t_shift_base: f64,
    t_shift_cur: f64,
    steps: usize,
}

fn settings(fields: &[&str]) -> Settings {
    let f = |i: usize| fields[i].parse::<f64>().unwrap();
    Settings { t_start: f(0), t_end: f(1), t_shift_base: f(2), t_shift_cur: f(3), steps: fields[4].parse().unwrap() }
}

fn crate_grid(s: Settings) -> Vec<f32> {
    let g = TimeGrid::Uniform(UniformGrid { t_start: s.t_start, t_end: s.t_end, t_shift_base: s.t_shift_base, t_shift_cur: s.t_shift_cur });
    g.points(s.steps).unwrap()
}

fn fnv1a64(points: &[f32]) -> u64 {
    let mut h: u64 = 0xcbf29ce484222325;
    for p in points {
        for b in p.to_bits().to_le_bytes() {
            h = (h ^ b as u64).wrapping_mul(0x100000001b3);
        }
    }
    h
}

fn table() -> (Vec<(Settings, u64)>, Vec<(Settings, Vec<f32>)>) {
    let text = std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join(TABLE)).expect(TABLE);
    let (mut digests, mut grids) = (Vec::new(), Vec::new());
    for line in text.lines().filter(|l| !l.starts_with('#')) {
        let f: Vec<&str> = line.split_whitespace().collect();
        match f[0] {
            "digest" => digests.push((settings(&f[1..6]), u64::from_str_radix(f[6], 16).unwrap())),
            "grid" => grids.push((settings(&f[1..6]), f[6..].iter().map(|h| f32::from_bits(u32::from_str_radix(h, 16).unwrap())).collect())),
            other => panic!("unknown record {other}"),
        }
    }
    (digests, grids)
}

fn ulp(a: f32, b: f32) -> u32 {
    (a.to_bits() as i64 - b.to_bits() as i64).unsigned_abs() as u32
}

#[test]
fn bit_identical_up_to_224_points_and_for_power_of_two_intervals() {
    let (digests, _) = table();
    assert!(digests.len() >= 40);
    let (mut same, mut differ) = (0, 0);
    for (s, want) in digests {
        let claim = s.steps <= 224 || (s.steps - 1).is_power_of_two();
        let got = fnv1a64(&crate_grid(s));
        if claim {
            assert_eq!(got, want, "{s:?}: the crate's grid is not jax's");
            same += 1;
        } else {
            assert_ne!(got, want, "{s:?}: identical where the docs say XLA's vectorised arithmetic differs (update the docs)");
            differ += 1;
        }
    }
    println!("{same} grids bit-identical to jax 0.5.1, {differ} long grids differ as documented");
}

/// The long grids: every difference lies in XLA's vectorised body, which is the crate's
/// arithmetic with `1 - i / (steps - 1)` fused (`fma(-i, r, 1)`); the scalar tail and the end
/// point are the crate's exactly.
#[test]
fn beyond_224_points_only_the_vectorised_body_differs() {
    let (_, grids) = table();
    for (s, jax) in grids {
        let ours = crate_grid(s);
        assert_eq!(ours.len(), jax.len());
        let m = s.steps - 1;
        let body = 8 * (m / 8);
        let diff: Vec<usize> = (0..jax.len()).filter(|&i| ours[i] != jax[i]).collect();
        let worst = diff.iter().map(|&i| (ulp(ours[i], jax[i]), jax[i])).max_by_key(|p| p.0).unwrap();
        println!("{} points: {} differ from jax, worst {} ulp at t = {}", s.steps, diff.len(), worst.0, worst.1);
        assert!(diff.iter().all(|&i| i < body), "{s:?}: a difference outside the vectorised body");
        // The fused arithmetic of the body (defaults: no shift, t_end = 0).
        assert_eq!((s.t_start, s.t_end, s.t_shift_cur / s.t_shift_base), (1.0, 0.0, 1.0));
        let r = 1.0 / m as f32;
        for (i, &want) in jax.iter().enumerate().take(body) {
            let fused = (-(i as f32)).mul_add(r, 1.0);
            assert_eq!(fused, want, "point {i}");
        }
        if s.steps == 1001 {
            assert_eq!((diff.len(), worst.0), (417, 215), "the numbers in the docs");
        }
    }
}
