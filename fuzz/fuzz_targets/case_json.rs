//! Fuzzes the `case.json` reader behind `diffuse_spec::golden::parse_case_json`.
//!
//! The input's first line is the directory name and the rest is the text of case.json,
//! so that the fuzzer controls both (a valid case needs `name` equal to the directory).
//! Properties: no panic, and on success `name` equals the directory name and `kind` is
//! one of format v1's kinds.
#![no_main]

#[allow(dead_code)]
#[path = "../../src/golden/parse.rs"]
mod parse;

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else { return };
    let (dir, json) = text.split_once('\n').unwrap_or(("case", text));
    if let Ok(c) = parse::parse_case_json(json, dir) {
        assert_eq!(c.name, dir);
        assert!(parse::KINDS.contains(&c.kind.as_str()));
        assert_eq!(c.meta.get("format").and_then(|v| v.as_u64()), Some(1));
    }
});
