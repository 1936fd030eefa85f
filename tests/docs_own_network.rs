//! The README's "Your own network" example (`examples/own_network.rs`, whose code the README
//! shows verbatim: `tests/docs_samplers.rs` checks it) runs: a two-layer `tch::nn` network,
//! trained with SiT for a few hundred steps, samples near the data.

#[path = "../examples/own_network.rs"]
#[allow(dead_code)]
mod example;

use tch::Kind;

#[test]
fn a_users_two_layer_network_trains_with_sit_and_samples_with_euler() {
    tch::set_num_threads(1);
    // nn::linear initialises from torch's global generator
    tch::manual_seed(0);
    let untrained = example::own_network(0).unwrap();
    tch::manual_seed(0);
    let trained = example::own_network(300).unwrap();
    let mean = |s: &tch::Tensor| Vec::<f64>::try_from(s.mean_dim(0, false, Kind::Double)).unwrap();
    let std = |s: &tch::Tensor| Vec::<f64>::try_from(s.std_dim(0, true, false).to_kind(Kind::Double)).unwrap();
    let (m0, m1, s1) = (mean(&untrained), mean(&trained), std(&trained));
    println!("untrained: mean {m0:.3?}; after 300 steps: mean {m1:.3?}, std {s1:.3?} (data: mean 2, std 0.5)");
    for d in 0..2 {
        assert!((m1[d] - 2.0).abs() < 0.2, "mean {m1:?}");
        assert!((m0[d] - 2.0).abs() > 1.0, "the untrained network is far from the data: {m0:?}");
        assert!((0.25..0.8).contains(&s1[d]), "std {s1:?}");
    }
}
