//! TrigFlow: the diffusion parametrization of sCT / sCD, and its maps to the EDM and SiT
//! conventions of this crate.
//!
//! Source: Lu & Song, "Simplifying, Stabilizing and Scaling Continuous-Time Consistency
//! Models" (arXiv:2410.11081, ICLR 2025), §3 "Simplifying continuous-time consistency
//! models" (TrigFlow) and §4.1. Equation numbers could not be checked against the paper
//! offline; formulas are cited by section and by the steps of the paper's Algorithm 1.
//!
//! With data `x ~ p_data` (standard deviation `sigma_d`), `z ~ N(0, sigma_d^2 I)` and
//! `t in [0, pi/2]` (§3, "TrigFlow"):
//!
//! ```text
//! x_t      = cos(t) x + sin(t) z                      state
//! dx_t/dt  = cos(t) z - sin(t) x                      conditional velocity (sCT's tangent input)
//! D(x_t,t) = cos(t) x_t - sin(t) sigma_d F(x_t / sigma_d, c_noise(t))   denoiser / consistency fn
//! PF-ODE:  dx_t/dt = sigma_d F(x_t / sigma_d, t)
//! x-hat    = cos(t) x_t - sin(t) dx_t/dt              (exact inverse of the two lines above)
//! z-hat    = sin(t) x_t + cos(t) dx_t/dt
//! ```
//!
//! `c_noise(t) = t` (§4.1, "identity time transformation"); the training time comes from
//! an EDM noise level: `t = arctan(sigma / sigma_d)` (Algorithm 1).
//!
//! ## Maps to the other conventions (derived here)
//!
//! The other interfaces of the crate draw unit-free noise `n = n_sigma eps` with
//! `eps ~ N(0, I)` (their `n_mu` must be 0), while TrigFlow's noise is `z = sigma_d eps`.
//! Write `k = sigma_d / n_sigma`.
//!
//! - **EDM** (`x_e = x + sigma n`): dividing `x_t` by `cos(t)` gives `x + sigma_d tan(t) eps`,
//!   so `sigma = k tan(t)`, `x_e = x_t / cos(t)`; back, `t = arctan(sigma / k)`,
//!   `x_t = cos(t) x_e`. A denoiser `D(x_e, sigma)` is `x-hat`; the noise estimate is
//!   `eps-hat = (x_e - D) / (sigma n_sigma)` (EDM's `pred` over `n_sigma`).
//! - **SiT** (`x_s = (1 - s) x + s n`, noise at `s = 1`): `x_s = x_t / (cos(t) + k sin(t))`,
//!   `s = k sin(t) / (cos(t) + k sin(t))`; back, `t = atan2(s, k (1 - s))`,
//!   `x_t = (cos(t) + k sin(t)) x_s`. A SiT velocity `v = dx_s/ds` (target `n - x`) gives
//!   `x-hat = x_s - s v`, `eps-hat = (x_s + (1 - s) v) / n_sigma`.
//! - Either way the TrigFlow velocity is `dx_t/dt = sigma_d cos(t) eps-hat - sin(t) x-hat`,
//!   and from a TrigFlow velocity, `x-hat` and `z-hat = sigma_d eps-hat` above give back
//!   EDM's `D = x-hat` and SiT's `v = n_sigma eps-hat - x-hat`.
//!
//! All functions work elementwise in the dtype of their inputs (float32 or float64); `t`,
//! `sigma`, `s` are `[B]` vectors broadcast to the right over the state.

use tch::Tensor;

use super::bcast_right;
use crate::error::{Error, Result};

fn check_scale(name: &str, v: f64) -> Result<()> {
    if !(v.is_finite() && v > 0.0) {
        return Err(Error::invalid(name, "a finite value > 0", v));
    }
    Ok(())
}

fn cos_sin(t: &Tensor, nd: usize) -> Result<(Tensor, Tensor)> {
    let tb = bcast_right(t, nd)?;
    Ok((tb.f_cos()?, tb.f_sin()?))
}

/// The training time from an EDM noise level: `t = arctan(sigma / sigma_d)` (Lu & Song 2024,
/// Algorithm 1, with `sigma = e^tau`, `tau ~ N(P_mean, P_std^2)`).
pub fn time_from_sigma(sigma: &Tensor, sigma_d: f64) -> Result<Tensor> {
    check_scale("sigma_d", sigma_d)?;
    Ok(sigma.f_div_scalar(sigma_d)?.f_atan()?)
}

/// The EDM noise level of a TrigFlow time: `sigma = sigma_d tan(t)` (inverse of
/// [`time_from_sigma`]; Lu & Song 2024, §3).
pub fn sigma_from_time(t: &Tensor, sigma_d: f64) -> Result<Tensor> {
    check_scale("sigma_d", sigma_d)?;
    Ok(t.f_tan()?.f_mul_scalar(sigma_d)?)
}

/// The noisy state `x_t = cos(t) x + sin(t) z`, `z ~ N(0, sigma_d^2)` (Lu & Song 2024, §3,
/// TrigFlow's forward process).
pub fn state(x: &Tensor, z: &Tensor, t: &Tensor) -> Result<Tensor> {
    let (c, s) = cos_sin(t, x.dim())?;
    Ok(c.f_mul(x)?.f_add(&s.f_mul(z)?)?)
}

/// The conditional velocity `dx_t/dt = cos(t) z - sin(t) x` (Lu & Song 2024, §3, the
/// TrigFlow diffusion target `v_t`; Algorithm 1's tangent input for consistency training).
pub fn velocity(x: &Tensor, z: &Tensor, t: &Tensor) -> Result<Tensor> {
    let (c, s) = cos_sin(t, x.dim())?;
    Ok(c.f_mul(z)?.f_sub(&s.f_mul(x)?)?)
}

/// The consistency function / denoiser from a network output `F`:
/// `f(x_t, t) = cos(t) x_t - sin(t) sigma_d F` (Lu & Song 2024, §3, TrigFlow's `f_theta`;
/// `f(x_t, 0) = x_t` exactly, the boundary condition).
pub fn consistency(x_t: &Tensor, t: &Tensor, f: &Tensor, sigma_d: f64) -> Result<Tensor> {
    check_scale("sigma_d", sigma_d)?;
    let (c, s) = cos_sin(t, x_t.dim())?;
    Ok(c.f_mul(x_t)?.f_sub(&s.f_mul(&f.f_mul_scalar(sigma_d)?)?)?)
}

/// `(x-hat, z-hat)` from a state and its velocity: `x-hat = cos(t) x_t - sin(t) dx_t/dt`,
/// `z-hat = sin(t) x_t + cos(t) dx_t/dt` (the rotation inverting [`state`] and
/// [`velocity`]; Lu & Song 2024, §3).
pub fn split(x_t: &Tensor, t: &Tensor, dxdt: &Tensor) -> Result<(Tensor, Tensor)> {
    let (c, s) = cos_sin(t, x_t.dim())?;
    let xh = c.f_mul(x_t)?.f_sub(&s.f_mul(dxdt)?)?;
    let zh = s.f_mul(x_t)?.f_add(&c.f_mul(dxdt)?)?;
    Ok((xh, zh))
}

/// The TrigFlow velocity from data and unit-noise estimates:
/// `dx_t/dt = sigma_d cos(t) eps-hat - sin(t) x-hat` (Lu & Song 2024, §3, with `z = sigma_d eps`).
pub fn velocity_from_estimates(x_hat: &Tensor, eps_hat: &Tensor, t: &Tensor, sigma_d: f64) -> Result<Tensor> {
    check_scale("sigma_d", sigma_d)?;
    velocity(x_hat, &eps_hat.f_mul_scalar(sigma_d)?, t)
}

/// TrigFlow `(x_t, t)` to EDM `(x_e, sigma)`: `sigma = k tan(t)`, `x_e = x_t / cos(t)`,
/// `k = sigma_d / n_sigma` (derived in the module docs from Lu & Song 2024, §3, and EDM's
/// `x_e = x + sigma n`, Karras et al. 2022, eq. 1 / Table 1).
pub fn to_edm(x_t: &Tensor, t: &Tensor, sigma_d: f64, n_sigma: f64) -> Result<(Tensor, Tensor)> {
    check_scale("sigma_d", sigma_d)?;
    check_scale("n_sigma", n_sigma)?;
    let sigma = t.f_tan()?.f_mul_scalar(sigma_d / n_sigma)?;
    let x_e = x_t.f_div(&bcast_right(&t.f_cos()?, x_t.dim())?)?;
    Ok((x_e, sigma))
}

/// EDM `(x_e, sigma)` to TrigFlow `(x_t, t)`: `t = arctan(sigma / k)`, `x_t = cos(t) x_e`
/// (the inverse of [`to_edm`]).
pub fn from_edm(x_e: &Tensor, sigma: &Tensor, sigma_d: f64, n_sigma: f64) -> Result<(Tensor, Tensor)> {
    check_scale("sigma_d", sigma_d)?;
    check_scale("n_sigma", n_sigma)?;
    let t = sigma.f_div_scalar(sigma_d / n_sigma)?.f_atan()?;
    let x_t = x_e.f_mul(&bcast_right(&t.f_cos()?, x_e.dim())?)?;
    Ok((x_t, t))
}

fn sit_scale(t: &Tensor, k: f64) -> Result<Tensor> {
    // cos(t) + k sin(t) > 0 on [0, pi/2]
    Ok(t.f_cos()?.f_add(&t.f_sin()?.f_mul_scalar(k)?)?)
}

/// TrigFlow `(x_t, t)` to SiT `(x_s, s)`: `x_s = x_t / (cos(t) + k sin(t))`,
/// `s = k sin(t) / (cos(t) + k sin(t))`, `k = sigma_d / n_sigma` (derived in the module
/// docs from Lu & Song 2024, §3, and SiT's `x_s = (1 - s) x + s n`, Ma et al. 2024, eq. 1).
pub fn to_sit(x_t: &Tensor, t: &Tensor, sigma_d: f64, n_sigma: f64) -> Result<(Tensor, Tensor)> {
    check_scale("sigma_d", sigma_d)?;
    check_scale("n_sigma", n_sigma)?;
    let k = sigma_d / n_sigma;
    let den = sit_scale(t, k)?;
    let s = t.f_sin()?.f_mul_scalar(k)?.f_div(&den)?;
    let x_s = x_t.f_div(&bcast_right(&den, x_t.dim())?)?;
    Ok((x_s, s))
}

/// SiT `(x_s, s)` to TrigFlow `(x_t, t)`: `t = atan2(s, k (1 - s))`,
/// `x_t = (cos(t) + k sin(t)) x_s` (the inverse of [`to_sit`]).
pub fn from_sit(x_s: &Tensor, s: &Tensor, sigma_d: f64, n_sigma: f64) -> Result<(Tensor, Tensor)> {
    check_scale("sigma_d", sigma_d)?;
    check_scale("n_sigma", n_sigma)?;
    let k = sigma_d / n_sigma;
    let t = s.f_atan2(&s.f_neg()?.f_add_scalar(1.0)?.f_mul_scalar(k)?)?;
    let x_t = x_s.f_mul(&bcast_right(&sit_scale(&t, k)?, x_s.dim())?)?;
    Ok((x_t, t))
}

/// The TrigFlow velocity at `t` from a SiT velocity `v` (`dx_s/ds`, target `n - x`) at
/// `(x_s, s)`: `x-hat = x_s - s v`, `eps-hat = (x_s + (1 - s) v) / n_sigma`,
/// `dx_t/dt = sigma_d cos(t) eps-hat - sin(t) x-hat` (module docs; Lu & Song 2024, §3).
pub fn velocity_from_sit(x_s: &Tensor, s: &Tensor, v: &Tensor, t: &Tensor, sigma_d: f64, n_sigma: f64) -> Result<Tensor> {
    check_scale("n_sigma", n_sigma)?;
    let sb = bcast_right(s, x_s.dim())?;
    let x_hat = x_s.f_sub(&sb.f_mul(v)?)?;
    let eps_hat = x_s.f_add(&sb.f_neg()?.f_add_scalar(1.0)?.f_mul(v)?)?.f_div_scalar(n_sigma)?;
    velocity_from_estimates(&x_hat, &eps_hat, t, sigma_d)
}

/// The SiT velocity `v = n_sigma eps-hat - x-hat` (at the SiT state of `(x_t, t)`, see
/// [`to_sit`]) of a TrigFlow velocity `dx_t/dt` at `(x_t, t)` (module docs; the inverse of
/// [`velocity_from_sit`]).
pub fn sit_velocity(x_t: &Tensor, t: &Tensor, dxdt: &Tensor, sigma_d: f64, n_sigma: f64) -> Result<Tensor> {
    check_scale("sigma_d", sigma_d)?;
    check_scale("n_sigma", n_sigma)?;
    let (x_hat, z_hat) = split(x_t, t, dxdt)?;
    Ok(z_hat.f_mul_scalar(n_sigma / sigma_d)?.f_sub(&x_hat)?)
}

/// The TrigFlow velocity at `t` from an EDM denoiser output `d` at `(x_e, sigma)`:
/// `x-hat = d`, `eps-hat = (x_e - d) / (sigma n_sigma)`,
/// `dx_t/dt = sigma_d cos(t) eps-hat - sin(t) x-hat` (module docs; Lu & Song 2024, §3).
pub fn velocity_from_edm(x_e: &Tensor, sigma: &Tensor, d: &Tensor, t: &Tensor, sigma_d: f64, n_sigma: f64) -> Result<Tensor> {
    check_scale("n_sigma", n_sigma)?;
    let sb = bcast_right(sigma, x_e.dim())?;
    let eps_hat = x_e.f_sub(d)?.f_div(&sb.f_mul_scalar(n_sigma)?)?;
    velocity_from_estimates(d, &eps_hat, t, sigma_d)
}

/// The EDM denoiser output `D = x-hat = cos(t) x_t - sin(t) dx_t/dt` of a TrigFlow velocity
/// (module docs; the inverse of [`velocity_from_edm`]).
pub fn edm_denoised(x_t: &Tensor, t: &Tensor, dxdt: &Tensor) -> Result<Tensor> {
    Ok(split(x_t, t, dxdt)?.0)
}
