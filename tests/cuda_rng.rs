//! The device path of the random streams (`TensorDraws::OnDevice`: threefry and the float32
//! maps as libtorch tensor ops) on CUDA against the host path, bit for bit, 10^7 draws each.
//! Runs only where libtorch sees a GPU; skipped with a message otherwise. (The same path on
//! the CPU device is tested in `src/rng/device.rs`, including all 2^23 inputs of the normal
//! map.)

use diffuse_spec::rng::{set_tensor_draws, Key, Rngs, TensorDraws};
use tch::{Device, Kind, Tensor};

fn cuda() -> Option<Device> {
    if tch::Cuda::is_available() {
        Some(Device::Cuda(0))
    } else {
        eprintln!("SKIPPED: libtorch sees no CUDA device here, so the device-side random streams were not compared with the host");
        None
    }
}

fn f32_words(t: &Tensor) -> Vec<u32> {
    let t = t.to_device(Device::Cpu).to_kind(Kind::Float).reshape([-1]);
    Vec::<f32>::try_from(&t).unwrap().iter().map(|x| x.to_bits()).collect()
}

fn assert_same(what: &str, got: &[u32], want: &[u32]) {
    assert_eq!(got.len(), want.len(), "{what}: length");
    let bad: Vec<usize> = (0..got.len()).filter(|&i| got[i] != want[i]).collect();
    if let Some(&i) = bad.first() {
        let ord = |x: u32| if x >> 31 == 1 { -i64::from(x & 0x7fff_ffff) } else { i64::from(x) };
        let worst = bad.iter().map(|&j| ord(got[j]).abs_diff(ord(want[j]))).max().unwrap_or(0);
        panic!("{what}: {} of {} differ; first at {i} ({:#010x} vs {:#010x}); worst {worst} ulp", bad.len(), got.len(), got[i], want[i]);
    }
}

const N: usize = 10_000_000;

#[test]
fn device_normal_uniform_bits_equal_the_host_on_cuda() {
    let Some(dev) = cuda() else { return };
    let key = Key::from_seed(20250101);
    let shape = [N as i64];
    let normal = key.normal_tensor_on_device(&shape, dev).unwrap();
    assert_eq!(normal.device(), dev);
    let host: Vec<u32> = key.normal(N).iter().map(|x| x.to_bits()).collect();
    assert_same("normal, 10^7", &f32_words(&normal), &host);

    let uniform = key.uniform_tensor_on_device(&shape, -2.0, 3.0, dev).unwrap();
    let host: Vec<u32> = key.uniform(N, -2.0, 3.0).iter().map(|x| x.to_bits()).collect();
    assert_same("uniform[-2, 3), 10^7", &f32_words(&uniform), &host);

    let bits = key.bits_tensor_on_device(&shape, dev).unwrap().to_device(Device::Cpu);
    let bits: Vec<u32> = Vec::<i64>::try_from(&bits).unwrap().iter().map(|&w| w as u32).collect();
    assert_eq!(bits, key.bits(N), "bits, 10^7");
}

#[test]
fn streams_draw_the_same_noise_on_the_device() {
    let Some(dev) = cuda() else { return };
    let draw = |mode| {
        set_tensor_draws(mode);
        let mut rngs = Rngs::new(&[("noise", 7)]).unwrap();
        let t = rngs.normal("noise", &[256, 32, 32, 4], dev).unwrap();
        set_tensor_draws(TensorDraws::Host);
        f32_words(&t)
    };
    let on_device = draw(TensorDraws::OnDevice);
    assert_same("Rngs::normal of a DiT-XL/2 batch", &on_device, &draw(TensorDraws::Host));
}
