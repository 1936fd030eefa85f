//! Time grids: where a sampler evaluates the network (reference `sample_t(steps)`).
//!
//! Two grids, as in the reference (`sampling_time_dist`):
//!
//! - `uniform` (SiT / MeanFlow time, noise at `t = 1`): `t_i = linspace(t_start, t_end, steps)`,
//!   then the resolution shift `t_shift(t, s) = s t / (1 + (s - 1) t)` with
//!   `s = sqrt(t_shift_cur / t_shift_base)` (SD3, Esser et al. 2024, eq. 23). Defaults
//!   `t_start 1, t_end 0, t_shift_base 4096, t_shift_cur 4096` (so `s = 1`, no shift).
//!   `steps` points, the first `t_start` and the last `t_end` (both fixed by the shift).
//! - `exp` (EDM, where `t` is the noise level sigma; Karras et al. 2022, eq. 5):
//!   `sigma_i = (smax^(1/rho) + i / (steps - 1) (smin^(1/rho) - smax^(1/rho)))^rho` for
//!   `i < steps`, then a trailing `0`. Defaults `sigma_min 0.002, sigma_max 80, rho 7`.
//!   Quirk Q4: that is `steps + 1` points, so a sampler built with `num_sampling_steps = n`
//!   (which asks for `steps = n + 1`) takes `n + 1` steps on this grid, one more than asked.
//!
//! Arithmetic: both grids are computed on the host in float32 with the reference's operations
//! as XLA compiles them (JAX's `linspace` is `start (1 - i/div) + stop (i/div)`, the last
//! point set to `stop`; Python-float settings enter as float32 constants), so a grid is the
//! same on every device. The exp grid's `pow` is evaluated in float64 and rounded once, within
//! 1 ulp of XLA's float32 `pow`.
//!
//! Where the uniform grid is bit-identical to the reference's (jax 0.5.1 on an x86-64 CPU;
//! `tests/uniform_grid_jax.rs`, against a table written by `spec/scripts/uniform_grid_table.py`):
//! for every grid of at most 224 points (`num_sampling_steps <= 223`: every golden case, and
//! every setting tried), and for any size where `steps - 1` is a power of two. From 225 points
//! XLA's CPU backend compiles `linspace` into a vectorised loop (8 lanes) whose body fuses
//! `1 - i/div` into a fused multiply-add, while its scalar remainder (the last `(steps - 1) mod
//! 8` points) and the end point keep the arithmetic below. That split is the code generator's
//! choice (trip count, vector width, host), not the reference's, so the crate keeps the scalar
//! arithmetic: longer grids differ from jax's in the vectorised body by rounding (at 1001
//! points: 417 points, up to 215 ulp, near `t = 0`).

use serde::Deserialize;
use tch::{Device, Tensor};

use crate::error::{Error, Result};

/// The most points a grid may have (a guard against a step count that cannot fit in memory).
pub const MAX_GRID_POINTS: usize = 1 << 20;

/// The kind of time grid (`sampling_time_dist`).
///
/// Parsed like the reference: underscores removed, case ignored (`uniform`, `UNIFORM`, `exp`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(try_from = "String")]
pub enum GridKind {
    /// `linspace(t_start, t_end, steps)` then the resolution shift (SiT / MeanFlow time).
    Uniform,
    /// EDM's polynomial sigma schedule with a trailing 0 (EDM time: `t` is sigma).
    Exp,
}

impl GridKind {
    /// Parses `uniform` or `exp` the way the reference does (`s.replace('_', '').upper()`);
    /// anything else is [`Error::Unknown`].
    pub fn parse(s: &str) -> Result<GridKind> {
        match s.replace('_', "").to_ascii_uppercase().as_str() {
            "UNIFORM" => Ok(GridKind::Uniform),
            "EXP" => Ok(GridKind::Exp),
            _ => Err(Error::Unknown { what: "sampling time distribution".into(), name: s.into(), known: "uniform, exp".into() }),
        }
    }

    /// The reference's name (`uniform`, `exp`).
    pub fn as_str(self) -> &'static str {
        match self {
            GridKind::Uniform => "uniform",
            GridKind::Exp => "exp",
        }
    }
}

impl TryFrom<String> for GridKind {
    type Error = Error;
    fn try_from(s: String) -> Result<GridKind> {
        GridKind::parse(&s)
    }
}

/// `sampling_time_kwargs` as the reference takes it: every key optional, absent keys take
/// the defaults of the chosen grid. Keys of the *other* grid are refused by
/// [`TimeGrid::new`] (the reference silently ignores them, which hides typos and mix-ups).
#[derive(Debug, Clone, Copy, Default, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GridKwargs {
    /// Uniform grid: first time (default 1).
    pub t_start: Option<f64>,
    /// Uniform grid: last time (default 0).
    pub t_end: Option<f64>,
    /// Uniform grid: resolution at which the shift is 1 (default 4096).
    pub t_shift_base: Option<f64>,
    /// Uniform grid: the current resolution (default 4096); `s = sqrt(t_shift_cur / t_shift_base)`.
    pub t_shift_cur: Option<f64>,
    /// Exp grid: smallest nonzero sigma (default 0.002).
    pub sigma_min: Option<f64>,
    /// Exp grid: largest sigma, the first grid point (default 80).
    pub sigma_max: Option<f64>,
    /// Exp grid: the schedule's exponent (default 7).
    pub rho: Option<f64>,
}

/// The uniform grid's settings (reference defaults in [`Default`]).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct UniformGrid {
    /// First time, `1` by default (pure noise).
    pub t_start: f64,
    /// Last time, `0` by default (data).
    pub t_end: f64,
    /// Resolution (values per example) at which the shift is 1; `4096` by default.
    pub t_shift_base: f64,
    /// Current resolution; `4096` by default.
    pub t_shift_cur: f64,
}

impl Default for UniformGrid {
    fn default() -> Self {
        UniformGrid { t_start: 1.0, t_end: 0.0, t_shift_base: 4096.0, t_shift_cur: 4096.0 }
    }
}

impl UniformGrid {
    /// The shift `s = sqrt(t_shift_cur / t_shift_base)`.
    pub fn shift(&self) -> f64 {
        (self.t_shift_cur / self.t_shift_base).sqrt()
    }

    fn validate(&self) -> Result<()> {
        for (name, v) in [("t_start", self.t_start), ("t_end", self.t_end)] {
            if !v.is_finite() {
                return Err(Error::invalid(name, "a finite time", v));
            }
        }
        for (name, v) in [("t_shift_base", self.t_shift_base), ("t_shift_cur", self.t_shift_cur)] {
            if !(v.is_finite() && v > 0.0) {
                return Err(Error::invalid(name, "a finite resolution > 0", v));
            }
        }
        if self.t_end < 0.0 {
            return Err(Error::invalid("t_end", "a time >= 0 (data sits at t = 0)", self.t_end));
        }
        if self.t_start <= self.t_end {
            return Err(Error::invalid("t_start", format!("a time > t_end = {} (samplers run from noise to data)", self.t_end), self.t_start));
        }
        // The shift's denominator 1 + (s - 1) t is linear in t: positive at both ends means
        // positive (and the shift monotone) on the whole grid.
        let s = self.shift();
        if 1.0 + (s - 1.0) * self.t_start <= 0.0 {
            return Err(Error::invalid("t_start", format!("a time where the shift s = {s} stays finite (1 + (s - 1) t > 0)"), self.t_start));
        }
        Ok(())
    }

    /// `steps` float32 points: `linspace(t_start, t_end, steps)` shifted by `s`.
    fn points(&self, steps: usize) -> Vec<f32> {
        let (start, stop) = (self.t_start as f32, self.t_end as f32);
        let mut t = Vec::with_capacity(steps);
        if steps == 1 {
            t.push(start);
        } else {
            // XLA compiles JAX's `start * (1 - i / div) + stop * (i / div)` into
            // `fma(start, 1 - i * r, i * (stop * r))` with `r = 1 / div` (division by a constant
            // becomes a multiplication by its reciprocal, the constant is folded into `stop`,
            // and the sum is fused). Reproduced here: bit-identical to the reference's grid up
            // to 224 points (see the module docs for longer grids).
            let r = 1.0 / (steps - 1) as f32;
            let stop_r = stop * r;
            for i in 0..steps - 1 {
                let i = i as f32;
                t.push(start.mul_add(1.0 - i * r, i * stop_r));
            }
            t.push(stop);
        }
        let s = self.shift();
        let (s32, sm1) = (s as f32, (s - 1.0) as f32);
        t.into_iter().map(|t| s32 * t / (1.0 + sm1 * t)).collect()
    }
}

/// The EDM grid's settings (reference defaults in [`Default`]).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct ExpGrid {
    /// Smallest nonzero sigma, `0.002` by default.
    pub sigma_min: f64,
    /// Largest sigma (the first point), `80` by default.
    pub sigma_max: f64,
    /// The exponent, `7` by default.
    pub rho: f64,
}

impl Default for ExpGrid {
    fn default() -> Self {
        ExpGrid { sigma_min: 0.002, sigma_max: 80.0, rho: 7.0 }
    }
}

impl ExpGrid {
    fn validate(&self) -> Result<()> {
        if !(self.sigma_min.is_finite() && self.sigma_min > 0.0) {
            return Err(Error::invalid("sigma_min", "a finite sigma > 0 (the network is evaluated there)", self.sigma_min));
        }
        if !(self.sigma_max.is_finite() && self.sigma_max > self.sigma_min) {
            return Err(Error::invalid("sigma_max", format!("a finite sigma > sigma_min = {}", self.sigma_min), self.sigma_max));
        }
        if !(self.rho.is_finite() && self.rho > 0.0) {
            return Err(Error::invalid("rho", "a finite exponent > 0", self.rho));
        }
        Ok(())
    }

    /// `steps + 1` float32 points: the `steps` sigmas and a trailing 0 (quirk Q4).
    fn points(&self, steps: usize) -> Vec<f32> {
        let inv_rho = 1.0 / self.rho;
        let a = self.sigma_max.powf(inv_rho);
        let d = (self.sigma_min.powf(inv_rho) - a) as f32;
        let (a, rho, div) = (a as f32, self.rho as f32, (steps - 1) as f32);
        let mut t: Vec<f32> = (0..steps).map(|i| (a + i as f32 / div * d) as f64).map(|b| b.powf(rho as f64) as f32).collect();
        t.push(0.0);
        t
    }
}

/// A validated time grid.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum TimeGrid {
    /// See [`UniformGrid`].
    Uniform(UniformGrid),
    /// See [`ExpGrid`].
    Exp(ExpGrid),
}

impl Default for TimeGrid {
    /// The uniform grid with the reference defaults (`1 -> 0`, no shift).
    fn default() -> Self {
        TimeGrid::Uniform(UniformGrid::default())
    }
}

impl TimeGrid {
    /// Builds the grid of kind `kind` from the reference's `sampling_time_kwargs`: absent keys
    /// take the defaults; a key of the other grid is [`Error::InvalidArgument`]; so are
    /// `t_start <= t_end`, `t_end < 0`, non-positive resolutions or sigmas, `sigma_max <=
    /// sigma_min` and `rho <= 0`.
    pub fn new(kind: GridKind, kw: &GridKwargs) -> Result<TimeGrid> {
        let foreign: &[(&str, Option<f64>)] = match kind {
            GridKind::Uniform => &[("sigma_min", kw.sigma_min), ("sigma_max", kw.sigma_max), ("rho", kw.rho)],
            GridKind::Exp => &[("t_start", kw.t_start), ("t_end", kw.t_end), ("t_shift_base", kw.t_shift_base), ("t_shift_cur", kw.t_shift_cur)],
        };
        if let Some((name, _)) = foreign.iter().find(|(_, v)| v.is_some()) {
            return Err(Error::invalid(
                format!("sampling_time_kwargs.{name}"),
                format!("only settings of the `{}` grid", kind.as_str()),
                format!("`{name}`, a setting of the other grid"),
            ));
        }
        let g = match kind {
            GridKind::Uniform => {
                let d = UniformGrid::default();
                TimeGrid::Uniform(UniformGrid {
                    t_start: kw.t_start.unwrap_or(d.t_start),
                    t_end: kw.t_end.unwrap_or(d.t_end),
                    t_shift_base: kw.t_shift_base.unwrap_or(d.t_shift_base),
                    t_shift_cur: kw.t_shift_cur.unwrap_or(d.t_shift_cur),
                })
            }
            GridKind::Exp => {
                let d = ExpGrid::default();
                TimeGrid::Exp(ExpGrid {
                    sigma_min: kw.sigma_min.unwrap_or(d.sigma_min),
                    sigma_max: kw.sigma_max.unwrap_or(d.sigma_max),
                    rho: kw.rho.unwrap_or(d.rho),
                })
            }
        };
        g.validate()?;
        Ok(g)
    }

    /// Validates a grid built by hand (the checks of [`TimeGrid::new`]).
    pub fn validate(&self) -> Result<()> {
        match self {
            TimeGrid::Uniform(u) => u.validate(),
            TimeGrid::Exp(e) => e.validate(),
        }
    }

    /// The grid's kind.
    pub fn kind(&self) -> GridKind {
        match self {
            TimeGrid::Uniform(_) => GridKind::Uniform,
            TimeGrid::Exp(_) => GridKind::Exp,
        }
    }

    /// Reference `sample_t(steps)`: `steps` points for `uniform`, `steps + 1` for `exp`
    /// (quirk Q4), as float32 values, first point the noisiest. `steps` must be at least 2
    /// (a grid needs a step; the exp formula divides by `steps - 1`).
    pub fn points(&self, steps: usize) -> Result<Vec<f32>> {
        self.validate()?;
        if !(2..MAX_GRID_POINTS).contains(&steps) {
            return Err(Error::invalid("steps", format!("between 2 and {} grid points", MAX_GRID_POINTS - 1), steps));
        }
        Ok(match self {
            TimeGrid::Uniform(u) => u.points(steps),
            TimeGrid::Exp(e) => e.points(steps),
        })
    }

    /// [`TimeGrid::points`] as a float32 tensor on `device`.
    pub fn tensor(&self, steps: usize, device: Device) -> Result<Tensor> {
        Ok(Tensor::f_from_slice(&self.points(steps)?)?.f_to_device(device)?)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn uniform_defaults_are_linspace() {
        let g = TimeGrid::default();
        assert_eq!(g.points(5).unwrap(), vec![1.0, 0.75, 0.5, 0.25, 0.0]);
    }

    #[test]
    fn exp_has_one_point_more_q4() {
        let g = TimeGrid::new(GridKind::Exp, &GridKwargs::default()).unwrap();
        let p = g.points(4).unwrap();
        assert_eq!(p.len(), 5);
        assert!((p[0] - 80.0).abs() < 1e-4 && (p[3] - 0.002).abs() < 1e-8 && p[4] == 0.0, "{p:?}");
    }

    #[test]
    fn shift_fixes_the_ends_and_moves_the_middle() {
        let kw = GridKwargs { t_shift_cur: Some(1024.0), ..Default::default() };
        let p = TimeGrid::new(GridKind::Uniform, &kw).unwrap().points(3).unwrap();
        assert_eq!((p[0], p[2]), (1.0, 0.0));
        // s = 1/2: t_shift(0.5) = 0.25 / 0.75 = 1/3.
        assert!((p[1] - 1.0 / 3.0).abs() < 1e-7, "{p:?}");
    }

    #[test]
    fn invalid_settings_are_refused() {
        let bad = |kind, kw: GridKwargs| matches!(TimeGrid::new(kind, &kw), Err(Error::InvalidArgument { .. }));
        assert!(bad(GridKind::Uniform, GridKwargs { t_start: Some(0.0), ..Default::default() }));
        assert!(bad(GridKind::Uniform, GridKwargs { t_end: Some(-0.1), ..Default::default() }));
        assert!(bad(GridKind::Uniform, GridKwargs { t_shift_cur: Some(0.0), ..Default::default() }));
        assert!(bad(GridKind::Uniform, GridKwargs { rho: Some(7.0), ..Default::default() }));
        assert!(bad(GridKind::Exp, GridKwargs { sigma_min: Some(-1.0), ..Default::default() }));
        assert!(bad(GridKind::Exp, GridKwargs { sigma_max: Some(0.001), ..Default::default() }));
        assert!(bad(GridKind::Exp, GridKwargs { rho: Some(0.0), ..Default::default() }));
        assert!(bad(GridKind::Exp, GridKwargs { t_start: Some(1.0), ..Default::default() }));
        assert!(matches!(GridKind::parse("cosine"), Err(Error::Unknown { .. })));
        assert_eq!(GridKind::parse("EXP").unwrap(), GridKind::Exp);
        assert!(TimeGrid::default().points(1).is_err());
    }
}
