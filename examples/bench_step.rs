//! Times one training step of the crate, for `benches/compare` (which runs it next to the
//! JAX and PyTorch restatements, interleaved) and for the GPU report.
//!
//! ```text
//! cargo run --release --example bench_step -- --interface sit|edm|meanflow-fused|meanflow-db|meanflow-fad|sct-fused|sct-db|sct-fad|repa|net|net-dt
//!     [--config bench-s|bench-xl] [--device cpu|cuda] [--net dit|lightning|probe] [--attention math|fused]
//!     [--layer-norm fused|fast-variance] [--batch N]
//!     [--bf16] [--serve | --warmup N --steps N]
//! ```
//!
//! `--serve`: after setup prints `{"ready": ...}`, then answers each stdin line `run N` with
//! one JSON line `{"times_ms": [...]}` (N timed steps), `trim` with `{"trimmed": true}` after
//! `malloc_trim(0)`, until `quit`; the driver reads memory from /proc. Otherwise runs `--warmup` then `--steps` steps and prints one JSON summary with
//! the median step time, tokens per second, model TFLOP/s from the analytic FLOP count of
//! the DiT (see `benches/common/mod.rs`) and its fraction of the H200's bf16 peak.
//! On CUDA every timed step ends with `torch.cuda.synchronize`.

#[path = "../benches/common/mod.rs"]
mod common;

use std::io::BufRead;
use std::time::Instant;

use common::{sync, Config, Net, Step, StepOptions, TrainStep, H200_BF16_PEAK_TFLOPS};
use diffuse_spec::golden::parse_device;
use diffuse_spec::networks::{Attention, LayerNorm};
use diffuse_spec::precision::autocast_bf16;
use diffuse_spec::{Error, Result};
use serde_json::json;
use tch::Device;

extern "C" {
    fn malloc_trim(pad: usize) -> i32;
}

fn time_steps(s: &mut TrainStep, n: usize, device: Device, bf16: bool) -> Result<Vec<f64>> {
    let mut out = Vec::with_capacity(n);
    for _ in 0..n {
        sync(device);
        let t0 = Instant::now();
        let (loss, grads) = if bf16 { autocast_bf16(|| s.run())? } else { s.run()? };
        sync(device);
        out.push(t0.elapsed().as_secs_f64() * 1e3);
        drop((loss, grads));
    }
    Ok(out)
}

fn median(v: &[f64]) -> f64 {
    let mut v = v.to_vec();
    v.sort_by(f64::total_cmp);
    let n = v.len();
    if n == 0 {
        return f64::NAN;
    }
    if n % 2 == 1 {
        v[n / 2]
    } else {
        0.5 * (v[n / 2 - 1] + v[n / 2])
    }
}

fn main() -> Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let arg = |name: &str| args.iter().position(|a| a == name).and_then(|i| args.get(i + 1)).cloned();
    let flag = |name: &str| args.iter().any(|a| a == name);
    let step = Step::parse(&arg("--interface").unwrap_or_else(|| "sit".into()))?;
    let cfg = Config::parse(&arg("--config").unwrap_or_else(|| "bench-s".into()))?;
    let device = parse_device(&arg("--device").unwrap_or_else(|| "cpu".into()))?;
    if cfg == Config::BenchXl && !device.is_cuda() {
        return Err(Error::invalid("--config", "bench-s on CPU (bench-xl, DiT-XL/2 at batch 256, runs on CUDA only)", "bench-xl"));
    }
    let net = match arg("--net").as_deref() {
        None | Some("dit") => Net::Dit,
        Some("lightning") => Net::Lightning,
        Some("probe") => Net::Probe,
        Some(o) => return Err(Error::invalid("--net", "dit, lightning or probe", o)),
    };
    let attention = match arg("--attention").as_deref() {
        None => None,
        Some("math") => Some(Attention::Math),
        Some("fused") => Some(Attention::Fused),
        Some(o) => return Err(Error::invalid("--attention", "math or fused", o)),
    };
    let layer_norm = match arg("--layer-norm").as_deref() {
        None => None,
        Some("fused") => Some(LayerNorm::Fused),
        Some("fast-variance") => Some(LayerNorm::FastVariance),
        Some(o) => return Err(Error::invalid("--layer-norm", "fused or fast-variance", o)),
    };
    let batch = match arg("--batch") {
        None => None,
        Some(b) => match b.parse::<i64>() {
            Ok(b) if b >= 1 => Some(b),
            _ => return Err(Error::invalid("--batch", "a positive batch size", b)),
        },
    };
    let bf16 = flag("--bf16");
    let mut s = TrainStep::new(cfg, net, step, device, StepOptions { attention, layer_norm, batch })?;
    let info = json!({
        "impl": "crate", "interface": step.name(), "config": cfg.name(), "device": format!("{device:?}"), "net": format!("{net:?}").to_lowercase(),
        "attention": s.attention.map(|a| format!("{a:?}").to_lowercase()),
        "layer_norm": s.layer_norm.map(|n| format!("{n:?}").to_lowercase()), "bf16": bf16,
        "threads": tch::get_num_threads(), "batch": s.batch,
    });
    if flag("--serve") {
        println!("{}", json!({"ready": true, "info": info}));
        for line in std::io::stdin().lock().lines() {
            let line = line.map_err(|e| Error::invalid("stdin", "a command", e))?;
            let mut it = line.split_whitespace();
            match (it.next(), it.next().and_then(|n| n.parse::<usize>().ok())) {
                (Some("run"), Some(n)) => {
                    let t = time_steps(&mut s, n, device, bf16)?;
                    println!("{}", json!({"times_ms": t}));
                }
                (Some("trim"), _) => {
                    // Hands freed heap pages back to the OS, so that VmRSS measures live memory.
                    // SAFETY: glibc's malloc_trim has no preconditions.
                    unsafe { malloc_trim(0) };
                    println!("{}", json!({"trimmed": true}));
                }
                (Some("quit"), _) | (None, _) => break,
                _ => println!("{}", json!({"error": format!("unknown command {line:?}")})),
            }
        }
        return Ok(());
    }
    let warmup: usize = arg("--warmup").and_then(|v| v.parse().ok()).unwrap_or(2);
    let steps: usize = arg("--steps").and_then(|v| v.parse().ok()).unwrap_or(10);
    time_steps(&mut s, warmup, device, bf16)?;
    let t = time_steps(&mut s, steps, device, bf16)?;
    let med = median(&t);
    let b = s.batch;
    let flops = s.step_flops();
    let tflops = flops / (med * 1e-3) / 1e12;
    println!(
        "{}",
        json!({
            "info": info, "times_ms": t, "median_ms": med,
            "tokens_per_s": (b * s.tokens_per_example) as f64 / (med * 1e-3),
            "model_flops_per_step": flops, "tflops": tflops,
            "fraction_of_h200_bf16_peak": tflops / H200_BF16_PEAK_TFLOPS,
        })
    );
    Ok(())
}
