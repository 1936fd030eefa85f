//! Replay of kind `coefficients`: `c_in, c_out, c_skip, c_noise` at `in.t`, and
//! `t_shift(in.t_unit, s)` for each `s` of `t_shifts` (file `out.t_shift_<s>`,
//! `s` written as Python prints it with `p` for the point: `0p5`, `3p0`).

use super::spec::CoefficientsSpec;
use super::{Computed, ReplayOptions, Replayed};
use crate::error::Result;
use crate::golden::{Array, Case};
use crate::interfaces::t_shift;

/// The file-name form of a shift value: Python's `repr` with `.` replaced by `p`.
pub fn shift_name(s: f64) -> String {
    format!("{s:?}").replace('.', "p").replace('-', "m")
}

/// Replays the case.
pub fn run(case: &Case, spec: &CoefficientsSpec, opts: &ReplayOptions) -> Result<Replayed> {
    let device = opts.device;
    let any = spec.interface.build(case, device)?;
    let iface = any.as_preconditioning();
    let t = case.tensor("in.t", "<f4", None, device)?;
    let t_unit = case.tensor("in.t_unit", "<f4", None, device)?;
    let mut out = Computed::new();
    out.insert("out.c_in".into(), Array::from_tensor(&iface.c_in(&t)?)?);
    out.insert("out.c_out".into(), Array::from_tensor(&iface.c_out(&t)?)?);
    out.insert("out.c_skip".into(), Array::from_tensor(&iface.c_skip(&t)?)?);
    out.insert("out.c_noise".into(), Array::from_tensor(&iface.c_noise(&t)?)?);
    for &s in &spec.t_shifts {
        out.insert(format!("out.t_shift_{}", shift_name(s)), Array::from_tensor(&t_shift(&t_unit, s)?)?);
    }
    Ok(out.into())
}

#[cfg(test)]
mod tests {
    #[test]
    fn shift_names_follow_python_repr() {
        assert_eq!(super::shift_name(0.5), "0p5");
        assert_eq!(super::shift_name(3.0), "3p0");
        assert_eq!(super::shift_name(0.25), "0p25");
    }
}
