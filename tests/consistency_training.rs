//! A short sCT run on toy 2-D data (two tight clusters at `+-(0.6, 0.6)`, std 0.1): the sCT
//! loss falls and one-step samples move to the data. Prints the numbers it checks.
//!
//! As in Lu & Song 2024 (Algorithm 1, "Init: theta <- theta_pretrain"), the consistency model
//! starts from a TrigFlow diffusion model: 600 steps of `||sigma_d F(x_t / sigma_d, t) -
//! dx_t/dt||^2`, then 1500 sCT steps (tangent warm-up over 300). Plain Adam (lr 1e-3) on the
//! probe MLP and the interface's log-variance head; one-step samples from an EMA (0.99) of
//! the network. The probe's time features are `sin/cos(t)`, `sin/cos(e t)` (`freqs = 2`):
//! with `freqs = 4` (frequencies up to e^3 = 20) the same run is unstable, in line with the
//! paper's advice against large Fourier scales for the time embedding (§4.1).
//! Everything is seeded; the run takes about 10 s on one core.

use diffuse_spec::interfaces::{default_t_max, sample_one_step, Interface, LogVarHead, Sct, SctConfig};
use diffuse_spec::networks::{Backbone, Cond, ProbeMlp, ProbeMlpConfig};
use diffuse_spec::rng::Rngs;
use tch::{Device, Kind, Tensor};

const CENTERS: [f64; 4] = [0.6, 0.6, -0.6, -0.6];
const CFG: ProbeMlpConfig = ProbeMlpConfig { channels: 2, hidden: 128, freqs: 2 };
const WARMUP: u64 = 300;

/// `n` points: a fair coin picks a cluster, plus N(0, 0.1^2) noise.
fn data(rngs: &mut Rngs, n: i64) -> Tensor {
    let u = rngs.uniform("data", &[n], 0.0, 1.0, Device::Cpu).unwrap();
    let e = rngs.normal("data", &[n, 2], Device::Cpu).unwrap() * 0.1;
    let c = Tensor::from_slice(&CENTERS).to_kind(Kind::Float).reshape([2, 2]);
    c.index_select(0, &u.ge(0.5).to_kind(Kind::Int64)) + e
}

/// Energy distance `2 E|X - Y| - E|X - X'| - E|Y - Y'|` (V-statistic).
fn energy(a: &Tensor, b: &Tensor) -> f64 {
    let d = |p: &Tensor, q: &Tensor| (p.unsqueeze(1) - q.unsqueeze(0)).square().sum_dim_intlist(&[-1i64][..], false, Kind::Float).sqrt().mean(Kind::Float).double_value(&[]);
    2.0 * d(a, b) - d(a, a) - d(b, b)
}

/// Mean distance of each sample to its nearest cluster centre (0.125 for the data itself).
fn to_clusters(s: &Tensor) -> f64 {
    let c = Tensor::from_slice(&CENTERS).to_kind(Kind::Float).reshape([2, 2]);
    let d = (s.unsqueeze(1) - c.unsqueeze(0)).square().sum_dim_intlist(&[-1i64][..], false, Kind::Float).sqrt();
    d.min_dim(1, false).0.mean(Kind::Float).double_value(&[])
}

struct Adam {
    params: Vec<Tensor>,
    m: Vec<Tensor>,
    v: Vec<Tensor>,
    lr: f64,
    t: i32,
}

impl Adam {
    fn new(params: Vec<Tensor>, lr: f64) -> Adam {
        let m = params.iter().map(|p| p.zeros_like()).collect();
        let v = params.iter().map(|p| p.zeros_like()).collect();
        Adam { params, m, v, lr, t: 0 }
    }

    fn step(&mut self) {
        let _ng = tch::no_grad_guard();
        self.t += 1;
        let (b1, b2, eps) = (0.9f64, 0.999f64, 1e-8);
        for ((p, m), v) in self.params.iter_mut().zip(&mut self.m).zip(&mut self.v) {
            let mut g = p.grad();
            if !g.defined() {
                continue;
            }
            *m = &*m * b1 + &g * (1.0 - b1);
            *v = &*v * b2 + g.square() * (1.0 - b2);
            let upd = (&*m / (1.0 - b1.powi(self.t))) / ((&*v / (1.0 - b2.powi(self.t))).sqrt() + eps) * self.lr;
            let _ = p.f_sub_(&upd).unwrap();
            let _ = g.zero_();
        }
    }
}

/// A probe initialised for training (unlike `ProbeMlp::init`, which mirrors the spec's
/// fixture initialisation with scale 0.5): weights `N(0, 1/fan_in)` from the crate's
/// streams, zero biases, and `freqs = exp(arange(K))` (low frequencies keep this run stable).
fn small_init_probe(seed: i64) -> ProbeMlp {
    let key = diffuse_spec::rng::Key::from_seed(seed);
    let params = CFG
        .parameter_shapes()
        .into_iter()
        .enumerate()
        .map(|(i, (name, shape))| {
            let n: i64 = shape.iter().product();
            let scale = if shape.len() == 2 { 1.0 / (shape[0] as f64).sqrt() } else { 0.0 };
            let v = Tensor::from_slice(&key.fold_in(i as u32).normal(n as usize)).reshape(&shape[..]) * scale;
            (name.to_string(), v)
        })
        .collect();
    ProbeMlp::new(CFG, params, Tensor::arange(CFG.freqs, (Kind::Float, Device::Cpu)).exp()).unwrap()
}

#[test]
fn sct_training_on_toy_data_moves_one_step_samples_to_the_data() {
    let start = std::time::Instant::now();
    // tiny tensors: intra-op threads only contend (this binary holds this one test)
    tch::set_num_threads(1);
    let net = small_init_probe(0);
    let names: Vec<String> = net.parameters().into_iter().map(|(k, _)| k).collect();
    let mut sct = Sct::new(SctConfig { tangent_warmup_steps: WARMUP, ..Default::default() }, LogVarHead::init(8, Device::Cpu, Kind::Float).unwrap()).unwrap();
    let mut params: Vec<Tensor> = net.parameters().into_iter().map(|(_, p)| p).collect();
    params.extend(sct.parameters().into_iter().map(|(_, p)| p));
    let mut opt = Adam::new(params, 1e-3);

    // evaluation: fixed data, fixed noise, one-step samples at t_max = arctan(80 / 0.5)
    let mut ev = Rngs::new(&[("data", 1), ("noise", 2)]).unwrap();
    let eval_data = data(&mut ev, 512);
    let eval_noise = ev.normal("noise", &[512, 2], Device::Cpu).unwrap();
    let samples = |s: &Sct, n: &ProbeMlp| sample_one_step(s, n, &eval_noise, None, default_t_max(0.5)).unwrap();
    let eval_x = data(&mut Rngs::new(&[("data", 3)]).unwrap(), 1024);
    // the sCT loss at r = 1 on a fixed batch with fixed draws
    let eval_loss = |s: &Sct, n: &ProbeMlp| {
        let o = s.loss_at(n, &eval_x, Cond::none(), &mut Rngs::new(&[("time", 4), ("noise", 5)]).unwrap(), WARMUP).unwrap();
        o.loss.mean(Kind::Float).double_value(&[])
    };
    let ema_net = |ema: &[Tensor]| {
        let params = names.iter().cloned().zip(ema.iter().map(|t| t.copy())).collect();
        ProbeMlp::new(CFG, params, Tensor::arange(CFG.freqs, (Kind::Float, Device::Cpu)).exp()).unwrap()
    };
    let init = samples(&sct, &net);

    // phase 0: TrigFlow diffusion pretraining
    let mut train = Rngs::new(&[("data", 10), ("time", 11), ("noise", 12)]).unwrap();
    for _ in 0..600 {
        let x = data(&mut train, 256);
        let t = sct.sample_t(256, &mut train, Device::Cpu).unwrap();
        let n = sct.sample_n(&[256, 2], &mut train, Device::Cpu).unwrap();
        let x_t = sct.sample_x_t(&x, &n, &t).unwrap();
        let v = sct.target(&x, &n, &t).unwrap();
        let loss = (sct.network_output(&net, &x_t, &t, Cond::none()).unwrap() * 0.5 - v).square().mean(Kind::Float);
        loss.backward();
        opt.step();
    }
    let pre = samples(&sct, &net);
    let l_pre = eval_loss(&sct, &net);

    // phase 1: sCT
    let mut opt = Adam::new(opt.params, 1e-3);
    let mut ema: Vec<Tensor> = net.parameters().into_iter().map(|(_, p)| p.detach().copy()).collect();
    let mut losses = Vec::new();
    for step in 0..1500u64 {
        sct.on_step(step);
        let x = data(&mut train, 256);
        let loss = sct.loss(&net, &x, Cond::none(), &mut train).unwrap().loss.mean(Kind::Float);
        losses.push(loss.double_value(&[]));
        loss.backward();
        opt.step();
        let _ng = tch::no_grad_guard();
        for (e, (_, p)) in ema.iter_mut().zip(net.parameters()) {
            *e = &*e * 0.99 + p.detach() * 0.01;
        }
    }
    let final_net = ema_net(&ema);
    let post = samples(&sct, &final_net);
    let l_post = eval_loss(&sct, &final_net);

    let mean = |v: &[f64]| v.iter().sum::<f64>() / v.len() as f64;
    let w = WARMUP as usize;
    let (l0, l1) = (mean(&losses[w..w + 100]), mean(&losses[losses.len() - 100..]));
    let (e_init, e_pre, e_post) = (energy(&init, &eval_data), energy(&pre, &eval_data), energy(&post, &eval_data));
    let (c_init, c_pre, c_post) = (to_clusters(&init), to_clusters(&pre), to_clusters(&post));
    println!("sCT toy run ({:.1} s): 600 diffusion steps, then 1500 sCT steps, batch 256", start.elapsed().as_secs_f64());
    println!("  training sCT loss, mean of 100 steps: just after warm-up {l0:.4} -> last {l1:.4}");
    println!("  evaluation sCT loss (r = 1, fixed batch): after pretraining {l_pre:.4} -> after sCT {l_post:.4}");
    println!("  one-step energy distance to the data: init {e_init:.4}, after pretraining {e_pre:.4}, after sCT {e_post:.4}");
    println!("  one-step mean distance to the nearest cluster: init {c_init:.4}, after pretraining {c_pre:.4}, after sCT {c_post:.4} (data: 0.125)");
    assert!(l1 < l0 && l_post < l_pre, "the sCT loss must fall: {l0} -> {l1}, {l_pre} -> {l_post}");
    assert!(e_post < 0.5 * e_pre && e_post < 0.5 * e_init, "one-step samples must approach the data: {e_init} / {e_pre} -> {e_post}");
    assert!(c_post < c_pre && c_post < c_init, "{c_init} / {c_pre} -> {c_post}");
}
