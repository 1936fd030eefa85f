//! The pure parser of a golden case's `case.json` text.
//!
//! Nothing here touches libtorch, the file system or another module of the crate (only
//! `std` and `serde_json`), so that `fuzz/` can include this very file with `#[path]` and
//! fuzz it without linking libtorch. [`super::parse_case_json`] wraps it into the crate's
//! error type. The `.npy` reader it used to share this file with is `crate::npy`.

use serde_json::{Map, Value};

/// Largest `case.json` text accepted, in bytes (the same bound as `Case::open`'s).
pub const MAX_CASE_JSON_TEXT: usize = 1 << 20;

/// The validated top of a `case.json`: its `name`, its `kind` (as written; the caller maps
/// it to a kind it knows) and the whole object.
#[derive(Debug, Clone, PartialEq)]
pub struct CaseJson {
    /// `name`, equal to the directory name.
    pub name: String,
    /// `kind`.
    pub kind: String,
    /// The whole object.
    pub meta: Map<String, Value>,
}

/// The kinds of format v1, in the order of docs/format.md.
pub const KINDS: [&str; 8] = ["rng", "coefficients", "loss", "grad", "pred", "sampler", "network", "encoder"];

/// Parses and validates the text of a `case.json` in a directory named `dir_name`: a JSON
/// object with `format` 1, a string `name` equal to `dir_name`, and a string `kind` among
/// [`KINDS`]. The message of an error says what is wrong (the file is always `case.json`).
pub fn parse_case_json(text: &str, dir_name: &str) -> Result<CaseJson, String> {
    if text.len() > MAX_CASE_JSON_TEXT {
        return Err(format!("{} bytes, more than the {MAX_CASE_JSON_TEXT} accepted", text.len()));
    }
    let value: Value = serde_json::from_str(text).map_err(|e| format!("not valid JSON: {e}"))?;
    let Value::Object(meta) = value else {
        return Err("not a JSON object".into());
    };
    match meta.get("format") {
        Some(v) if v.as_u64() == Some(1) => {}
        Some(v) => return Err(format!("format {v}, only format 1 is understood")),
        None => return Err("no `format`".into()),
    }
    let name = match meta.get("name") {
        Some(Value::String(s)) => s.clone(),
        _ => return Err("`name` missing or not a string".into()),
    };
    if name != dir_name {
        return Err(format!("name `{name}` differs from the directory name `{dir_name}`"));
    }
    let kind = match meta.get("kind") {
        Some(Value::String(s)) if KINDS.contains(&s.as_str()) => s.clone(),
        Some(Value::String(s)) => return Err(format!("unknown case kind `{s}`; known: {}", KINDS.join(", "))),
        _ => return Err("`kind` missing or not a string".into()),
    };
    Ok(CaseJson { name, kind, meta })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn case_json_top_level() {
        let ok = parse_case_json(r#"{"format": 1, "name": "a", "kind": "rng"}"#, "a").unwrap();
        assert_eq!((ok.name.as_str(), ok.kind.as_str()), ("a", "rng"));
        for (text, needle) in [
            ("[]", "not a JSON object"),
            (r#"{"format": 1.5, "name": "a", "kind": "rng"}"#, "only format 1"),
            (r#"{"name": "a", "kind": "rng"}"#, "no `format`"),
            (r#"{"format": 1, "name": 3, "kind": "rng"}"#, "`name`"),
            (r#"{"format": 1, "name": "b", "kind": "rng"}"#, "differs"),
            (r#"{"format": 1, "name": "a", "kind": "x"}"#, "unknown case kind `x`"),
            (r#"{"format": 1, "name": "a"}"#, "`kind`"),
            ("\u{feff}{}", "not valid JSON"),
        ] {
            let e = parse_case_json(text, "a").unwrap_err();
            assert!(e.contains(needle), "{text}: {e}");
        }
        let deep = "[".repeat(100_000);
        assert!(parse_case_json(&deep, "a").unwrap_err().contains("not valid JSON"));
    }
}
