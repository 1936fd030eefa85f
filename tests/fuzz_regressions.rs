//! Every input that ever crashed a fuzz target (`fuzz/`, see `make fuzz`) or the reader it
//! replaced, kept as a file under `tests/fuzz_regressions/<target>/` and replayed here
//! through the crate's public API: each must be an error value (or a valid parse), never
//! a panic, an abort or an allocation beyond the input's size.
//!
//! Provenance of the files (see also the message of the commit that added each):
//! - `npy/legacy-oom-*`: found in about 10 s by the `npy` harness run against the reader
//!   this crate used before issue 10 (npyz's header parser), which allocates the declared
//!   header length (here 662 372 470 bytes from a 3.0 header) before reading it.
//! - `npy/legacy-timeout-*`: the same harness (`-timeout=5`), 192 bytes whose header nests
//!   `{{{{...`: npyz's Python-literal parser (pest) backtracks for more than 20 s on it.
//! - `npy/legacy-overflow-*`: found by reading npyz (it computes `shape.iter().product()`
//!   unchecked) and confirmed by running the harness of the old reader on it: "attempt to
//!   multiply with overflow", a panic.
//!
//! The new parser (now `src/npy.rs`, then part of `src/golden/parse.rs`) ran under the `npy` and `case_json` targets for
//! 150 s each (4.3 M and 5.1 M executions) without a crash, a leak, a timeout or an
//! allocation over 256 MB.
//!
//! To add one: copy `fuzz/artifacts/<target>/crash-*` here under `<target>/` with a name
//! that says what it is; this test picks it up.

use std::fs;
use std::path::Path;

use diffuse_spec::golden::{parse_case_json, Array};

fn inputs(target: &str) -> Vec<(String, Vec<u8>)> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fuzz_regressions").join(target);
    let Ok(entries) = fs::read_dir(&dir) else {
        return vec![]; // no crash ever found for this target
    };
    let mut out: Vec<(String, Vec<u8>)> = entries
        .map(|e| {
            let p = e.unwrap().path();
            (p.file_name().unwrap().to_string_lossy().into_owned(), fs::read(&p).unwrap())
        })
        .collect();
    out.sort();
    out
}

#[test]
fn npy_inputs_that_once_crashed_are_errors_now() {
    let cases = inputs("npy");
    assert!(!cases.is_empty());
    for (name, bytes) in cases {
        let start = std::time::Instant::now();
        let parsed = Array::parse_npy(&bytes);
        assert!(start.elapsed().as_secs_f64() < 1.0, "{name}: took {:?}", start.elapsed());
        match parsed {
            Ok(a) => assert_eq!(a.shape.iter().product::<usize>(), a.data.len(), "{name}"),
            Err(e) => {
                let msg = e.to_string();
                assert!(msg.contains("invalid argument `npy`"), "{name}: {msg}");
                if name.starts_with("legacy-oom") {
                    assert!(msg.contains("more than the 65536 accepted"), "{name}: {msg}");
                }
                if name.starts_with("legacy-overflow") {
                    assert!(msg.contains("overflows") || msg.contains("does not fit"), "{name}: {msg}");
                }
            }
        }
    }
}

#[test]
fn case_json_inputs_that_once_crashed_are_errors_now() {
    // The input format of the case_json target: the first line is the directory name.
    for (name, bytes) in inputs("case_json") {
        let Ok(text) = std::str::from_utf8(&bytes) else { continue };
        let (dir, json) = text.split_once('\n').unwrap_or(("case", text));
        if let Ok(c) = parse_case_json(json, dir) {
            assert_eq!(c.name, dir, "{name}");
        }
    }
}
