//! Every interface config embeds `BaseConfig` and is read from one flat object with the
//! reference's names: a base key is accepted by every config, each config's own keys by it,
//! and any other key is refused with its name (as `deny_unknown_fields` did before the base
//! settings moved into one struct).

use diffuse_spec::interfaces::{BaseConfig, EdmConfig, MeanFlowConfig, ScdConfig, SctConfig, SiTConfig, TimeDist};
use diffuse_spec::validate::Validation;
use serde::de::DeserializeOwned;
use serde_json::{json, Value};

/// A non-default value of every base key, and how to read it back.
fn base_values() -> Vec<(&'static str, Value, fn(&BaseConfig) -> bool)> {
    vec![
        ("train_time_dist_type", json!("logitnormal"), |b| b.train_time_dist_type == TimeDist::LogitNormal),
        ("t_mu", json!(0.25), |b| b.t_mu == 0.25),
        ("t_sigma", json!(1.5), |b| b.t_sigma == 1.5),
        ("n_mu", json!(0.125), |b| b.n_mu == 0.125),
        ("n_sigma", json!(2.0), |b| b.n_sigma == 2.0),
        ("x_sigma", json!(0.75), |b| b.x_sigma == 0.75),
        ("validation", json!("cheap"), |b| b.validation == Validation::Cheap),
    ]
}

fn parse<T: DeserializeOwned>(v: Value) -> Result<T, String> {
    serde_json::from_value(v).map_err(|e| e.to_string())
}

/// For config `T` (whose base is `base(&T)` and whose default is `T::default()`): `{}` is the
/// default; each base key sets its field; each of `own` is accepted; an unknown key, a
/// misspelt base key and a key of another config (`foreign`) are refused by name.
fn check<T: DeserializeOwned + Default + PartialEq + std::fmt::Debug>(name: &str, base: fn(&T) -> &BaseConfig, own: &[(&str, Value)], foreign: &str) {
    assert_eq!(parse::<T>(json!({})).unwrap(), T::default(), "{name}: {{}} is the default");
    for (key, value, read) in base_values() {
        let c: T = parse(json!({ key: value })).unwrap_or_else(|e| panic!("{name}: base key `{key}` refused: {e}"));
        assert!(read(base(&c)), "{name}: base key `{key}` not read");
    }
    for (key, value) in own {
        let c: Result<T, _> = parse(json!({ *key: value.clone() }));
        assert!(c.is_ok(), "{name}: own key `{key}` refused: {:?}", c.err());
    }
    for bad in ["no_such_key", "x_sigmaa", foreign] {
        let e = parse::<T>(json!({ "t_mu": 0.5, bad: 1.0 })).unwrap_err();
        assert!(e.contains(&format!("unknown field `{bad}`")), "{name}: `{bad}` refused with: {e}");
    }
    // A wrong type names the field too.
    let e = parse::<T>(json!({ "t_sigma": "wide" })).unwrap_err();
    assert!(e.contains("field `t_sigma`"), "{name}: {e}");
}

#[test]
fn base_keys_everywhere_unknown_keys_refused_by_name() {
    check::<BaseConfig>("BaseConfig", |c| c, &[], "t_shift_base");
    check::<SiTConfig>("SiTConfig", |c| &c.base, &[("t_shift_base", json!(16.0))], "guidance_scale");
    check::<EdmConfig>("EdmConfig", |c| &c.base, &[("t_shift_base", json!(16.0)), ("score", json!("denoiser"))], "fm_portion");
    check::<MeanFlowConfig>(
        "MeanFlowConfig",
        |c| &c.base,
        &[
            ("t_shift_base", json!(16.0)),
            ("guidance_scale", json!(2.0)),
            ("guidance_mixture_ratio", json!(0.1)),
            ("guidance_t_min", json!(0.1)),
            ("guidance_t_max", json!(0.9)),
            ("norm_eps", json!(0.01)),
            ("norm_power", json!(0.5)),
            ("fm_portion", json!(0.5)),
            ("cond_drop_ratio", json!(0.1)),
            ("jvp", json!("forward_ad")),
            ("cond_drop", json!("sampled")),
            ("score", json!("instantaneous")),
        ],
        "tangent_warmup_steps",
    );
    check::<SctConfig>("SctConfig", |c| &c.base, &[("tangent_warmup_steps", json!(5)), ("tangent_norm_const", json!(0.5)), ("jvp", json!("forward_ad"))], "guidance_scale");
    check::<ScdConfig>(
        "ScdConfig",
        |c| &c.sct.base,
        &[("tangent_warmup_steps", json!(5)), ("tangent_norm_const", json!(0.5)), ("jvp", json!("forward_ad")), ("guidance_scale", json!(2.0))],
        "t_shift_base",
    );
}

/// Absent keys take each config's own defaults, also for the embedded base: sCT / sCD's are
/// the paper's (lognormal, P_mean -1, P_std 1.4), the others the reference's.
#[test]
fn absent_base_keys_take_the_configs_own_defaults() {
    let s: SctConfig = parse(json!({ "x_sigma": 0.7 })).unwrap();
    assert_eq!(s.base, BaseConfig { x_sigma: 0.7, ..BaseConfig::sct() });
    let d: ScdConfig = parse(json!({ "guidance_scale": 2.0 })).unwrap();
    assert_eq!((d.sct.base.train_time_dist_type, d.sct.base.t_mu, d.guidance_scale), (TimeDist::LogNormal, -1.0, 2.0));
    let m: MeanFlowConfig = parse(json!({ "x_sigma": 0.7, "guidance_scale": 3.0 })).unwrap();
    assert_eq!(m, MeanFlowConfig { base: BaseConfig { x_sigma: 0.7, ..BaseConfig::default() }, guidance_scale: 3.0, ..MeanFlowConfig::default() });
}
