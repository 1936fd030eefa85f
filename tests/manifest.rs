//! Fixture integrity: `MANIFEST.sha256` is written by `diffuse-spec manifest DIR`, and
//! `diffuse-spec check` verifies it first, so that a silently edited, removed or added
//! golden file is an `ERROR` row naming the file and a non-zero exit.

use std::fs;
use std::path::Path;
use std::process::Command;

use diffuse_spec::golden::{find_manifest, verify_manifest, write_manifest, Array, Status, MANIFEST_NAME};

const BIN: &str = env!("CARGO_BIN_EXE_diffuse-spec");

/// `root/v1/<name>/`: a key(0) rng case that passes.
fn key0_case(root: &Path, name: &str) {
    let dir = root.join("v1").join(name);
    fs::create_dir_all(&dir).unwrap();
    fs::write(dir.join("case.json"), format!(r#"{{"format": 1, "name": "{name}", "kind": "rng", "calls": [{{"op": "key", "seed": 0}}]}}"#)).unwrap();
    Array::u32(vec![2], vec![0, 0]).unwrap().write_npy(&dir.join("out.0.npy")).unwrap();
}

/// A fixtures tree in a temporary "repository" (a Cargo.toml stops the upward search).
fn repo() -> tempfile::TempDir {
    let t = tempfile::tempdir().unwrap();
    fs::write(t.path().join("Cargo.toml"), "").unwrap();
    let fx = t.path().join("fixtures");
    key0_case(&fx, "a");
    key0_case(&fx, "b");
    t
}

fn run(args: &[&str]) -> (i32, String, String) {
    let o = Command::new(BIN).args(args).output().unwrap();
    (o.status.code().unwrap_or(-1), String::from_utf8_lossy(&o.stdout).into_owned(), String::from_utf8_lossy(&o.stderr).into_owned())
}

#[test]
fn a_written_manifest_verifies_and_is_sha256sum_format() {
    let t = repo();
    let fx = t.path().join("fixtures");
    assert_eq!(write_manifest(&fx).unwrap(), 4);
    let text = fs::read_to_string(fx.join(MANIFEST_NAME)).unwrap();
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines.len(), 4);
    assert!(lines[0].ends_with("  v1/a/case.json") && lines[0].len() == 64 + 2 + "v1/a/case.json".len(), "{text}");
    assert_eq!(find_manifest(&fx.join("v1/a")), Some(fx.join(MANIFEST_NAME).canonicalize().unwrap()));
    assert!(verify_manifest(&fx.join(MANIFEST_NAME), &fx).is_empty());
    assert!(verify_manifest(&fx.join(MANIFEST_NAME), &fx.join("v1/b")).is_empty());
    // The same digests as coreutils, where it is installed.
    if let Ok(o) = Command::new("sha256sum").arg("-c").arg(MANIFEST_NAME).current_dir(&fx).output() {
        assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stdout));
    }
}

#[test]
fn an_edited_file_is_an_error_row_naming_it() {
    let t = repo();
    let fx = t.path().join("fixtures");
    write_manifest(&fx).unwrap();
    // Same length, one value changed: the case itself would still parse.
    Array::u32(vec![2], vec![0, 1]).unwrap().write_npy(&fx.join("v1/b/out.0.npy")).unwrap();
    let rows = verify_manifest(&fx.join(MANIFEST_NAME), &fx);
    assert_eq!(rows.len(), 1, "{rows:#?}");
    assert_eq!(rows[0].status, Status::Error);
    assert_eq!(rows[0].quantity, "v1/b/out.0.npy");
    assert!(rows[0].detail.contains("differs from the manifest"), "{}", rows[0].detail);
    // Outside the checked subdirectory, the change is not this check's business.
    assert!(verify_manifest(&fx.join(MANIFEST_NAME), &fx.join("v1/a")).is_empty());
}

#[test]
fn missing_added_and_malformed_entries() {
    let t = repo();
    let fx = t.path().join("fixtures");
    write_manifest(&fx).unwrap();
    fs::remove_file(fx.join("v1/a/out.0.npy")).unwrap();
    fs::write(fx.join("v1/a/in.extra.npy"), b"x").unwrap();
    let mut text = fs::read_to_string(fx.join(MANIFEST_NAME)).unwrap();
    text.push_str("not a digest  v1/zz\n0000000000000000000000000000000000000000000000000000000000000000  ../escape\n");
    fs::write(fx.join(MANIFEST_NAME), text).unwrap();
    let rows = verify_manifest(&fx.join(MANIFEST_NAME), &fx);
    let find = |q: &str, needle: &str| rows.iter().any(|r| r.quantity == q && r.detail.contains(needle));
    assert!(find("v1/a/out.0.npy", "missing"), "{rows:#?}");
    assert!(find("v1/a/in.extra.npy", "not listed in the manifest"), "{rows:#?}");
    assert!(find("line 5", "malformed manifest line"), "{rows:#?}");
    assert!(find("line 6", "without `..`"), "{rows:#?}");
}

#[test]
fn check_verifies_the_manifest_first_and_exits_nonzero() {
    let t = repo();
    let fx = t.path().join("fixtures");
    let (code, out, err) = run(&["manifest", fx.to_str().unwrap()]);
    assert_eq!(code, 0, "{out}{err}");
    assert!(out.contains("(4 files)"), "{out}");
    let (code, out, err) = run(&["check", fx.join("v1").to_str().unwrap()]);
    assert_eq!(code, 0, "{out}{err}");
    assert!(err.contains("verified"), "{err}");
    // A silent edit of a golden file that still parses and still passes the replay.
    let p = fx.join("v1/a/case.json");
    let edited = fs::read_to_string(&p).unwrap().replace("\"seed\": 0", "\"seed\": 0 ");
    fs::write(&p, edited).unwrap();
    let (code, out, _) = run(&["check", fx.join("v1").to_str().unwrap()]);
    assert_eq!(code, 3, "a manifest mismatch is an ERROR row, exit 3: {out}");
    let row = out.lines().find(|l| l.contains("v1/a/case.json")).unwrap_or_else(|| panic!("no row names the file:\n{out}"));
    assert!(row.contains("ERROR") && row.contains("differs from the manifest"), "{row}");
    // JSON lines carry the same row.
    let (code, out, _) = run(&["check", "--json", fx.to_str().unwrap()]);
    assert_eq!(code, 3);
    assert!(out.lines().any(|l| l.contains("\"quantity\":\"v1/a/case.json\"") && l.contains("\"status\":\"error\"")), "{out}");
}

#[test]
fn no_manifest_no_check_and_the_search_stops_at_the_repository() {
    let t = repo();
    let fx = t.path().join("fixtures");
    assert_eq!(find_manifest(&fx.join("v1")), None);
    // A manifest above the repository root (here: above Cargo.toml) is not used.
    let outer = tempfile::tempdir().unwrap();
    fs::write(outer.path().join(MANIFEST_NAME), "garbage\n").unwrap();
    let inner = outer.path().join("repo");
    fs::create_dir_all(inner.join("fixtures")).unwrap();
    fs::write(inner.join("Cargo.toml"), "").unwrap();
    assert_eq!(find_manifest(&inner.join("fixtures")), None);
}

#[cfg(unix)]
#[test]
fn manifest_refuses_symlinks() {
    let t = repo();
    let fx = t.path().join("fixtures");
    std::os::unix::fs::symlink("/etc/hostname", fx.join("v1/a/in.link.npy")).unwrap();
    let (code, _, err) = run(&["manifest", fx.to_str().unwrap()]);
    assert_eq!(code, 2);
    assert!(err.contains("symlink"), "{err}");
}

/// The repository's own fixtures, when they carry a manifest, match it.
#[test]
fn the_repository_fixtures_match_their_manifest() {
    let fx = Path::new(env!("CARGO_MANIFEST_DIR")).join("fixtures");
    let m = fx.join(MANIFEST_NAME);
    if !m.is_file() {
        eprintln!("SKIPPED: {} does not exist on this branch (run `make fixtures` or `make manifest`)", m.display());
        return;
    }
    let rows = verify_manifest(&m, &fx);
    assert!(rows.is_empty(), "{}", diffuse_spec::golden::table(&rows));
}
