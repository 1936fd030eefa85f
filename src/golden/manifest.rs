//! Fixture integrity: a `MANIFEST.sha256` (the `sha256sum` format, `<hex>  <path>` per
//! line, paths relative to the manifest's directory) listing every file below it.
//!
//! `diffuse-spec check DIR` looks for a manifest in `DIR` and its parents (up to the
//! directory holding `.git` or `Cargo.toml`) and, when it finds one, verifies every file
//! of `DIR` against it before replaying: an edited, missing or unlisted file is an
//! `ERROR` row naming the file, so a silently changed golden file fails loudly.
//! `diffuse-spec manifest DIR` (and `make fixtures`) rewrites the manifest; `sha256sum -c
//! MANIFEST.sha256` run in that directory checks the same thing without this crate.

use std::collections::BTreeMap;
use std::io::Read;
use std::path::{Component, Path, PathBuf};

use sha2::{Digest, Sha256};

use super::report::{Row, Status};
use crate::error::{Error, Result};

/// The manifest's file name.
pub const MANIFEST_NAME: &str = "MANIFEST.sha256";

fn io(p: &Path) -> impl FnOnce(std::io::Error) -> Error + '_ {
    move |source| Error::Io { path: p.to_path_buf(), source }
}

/// The SHA-256 of a file, as 64 lowercase hex digits (streamed, any size).
pub fn sha256_file(path: &Path) -> Result<String> {
    let mut f = std::fs::File::open(path).map_err(io(path))?;
    if !f.metadata().map_err(io(path))?.is_file() {
        return Err(Error::invalid("path", "a regular file", path.display()));
    }
    let mut h = Sha256::new();
    let mut buf = vec![0u8; 1 << 16];
    loop {
        let n = f.read(&mut buf).map_err(io(path))?;
        if n == 0 {
            break;
        }
        h.update(&buf[..n]);
    }
    Ok(h.finalize().iter().map(|b| format!("{b:02x}")).collect())
}

/// Every file below `root` (recursively, not following symlinked directories), as
/// `/`-separated paths relative to `root`, sorted; the manifest itself is left out.
/// Symlinks are returned too, with `true` in the second place.
fn walk(root: &Path, base: &Path) -> Result<Vec<(String, bool)>> {
    let mut out = Vec::new();
    let mut stack = vec![root.to_path_buf()];
    while let Some(dir) = stack.pop() {
        for entry in std::fs::read_dir(&dir).map_err(io(&dir))? {
            let entry = entry.map_err(io(&dir))?;
            let path = entry.path();
            let ft = entry.file_type().map_err(io(&path))?;
            if ft.is_dir() {
                stack.push(path);
                continue;
            }
            let rel = path.strip_prefix(base).map_err(|_| Error::invalid("path", format!("a path below {}", base.display()), path.display()))?;
            let parts: Vec<String> = rel.components().map(|c| c.as_os_str().to_string_lossy().into_owned()).collect();
            let rel = parts.join("/");
            if rel == MANIFEST_NAME {
                continue;
            }
            out.push((rel, ft.is_symlink()));
        }
    }
    out.sort();
    Ok(out)
}

/// Writes `root/MANIFEST.sha256` listing every file below `root` (sorted, one line each);
/// returns the number of files. Refuses symlinks and names that `sha256sum` would have to
/// escape (a newline or a backslash), so that the manifest describes real files plainly.
pub fn write_manifest(root: &Path) -> Result<usize> {
    if !root.is_dir() {
        return Err(Error::invalid("DIR", "a directory", root.display()));
    }
    let mut text = String::new();
    let files = walk(root, root)?;
    for (rel, link) in &files {
        if *link {
            return Err(Error::invalid("fixtures", "regular files only", format!("a symlink `{rel}`")));
        }
        if rel.contains('\n') || rel.contains('\\') {
            return Err(Error::invalid("fixtures", "file names without newline or backslash", format!("{rel:?}")));
        }
        text.push_str(&format!("{}  {rel}\n", sha256_file(&root.join(rel))?));
    }
    let path = root.join(MANIFEST_NAME);
    let tmp = root.join(format!(".{MANIFEST_NAME}.tmp"));
    std::fs::write(&tmp, text).map_err(io(&tmp))?;
    std::fs::rename(&tmp, &path).map_err(io(&path))?;
    Ok(files.len())
}

/// The manifest that covers `dir`: `MANIFEST.sha256` in `dir` or the nearest parent, stopping
/// at the first directory that holds `.git` or `Cargo.toml` (the repository) or at the root.
pub fn find_manifest(dir: &Path) -> Option<PathBuf> {
    let dir = dir.canonicalize().ok()?;
    for d in dir.ancestors() {
        let m = d.join(MANIFEST_NAME);
        if m.is_file() {
            return Some(m);
        }
        if d.join(".git").exists() || d.join("Cargo.toml").exists() {
            return None;
        }
    }
    None
}

fn row(file: &str, detail: String) -> Row {
    Row::plain(MANIFEST_NAME, "manifest", file, Status::Error, detail)
}

/// Parses manifest text into `path -> digest`; malformed lines become error messages.
fn parse_manifest(text: &str) -> (BTreeMap<String, String>, Vec<(String, String)>) {
    let mut entries = BTreeMap::new();
    let mut errors = Vec::new();
    for (i, line) in text.lines().enumerate() {
        if line.trim().is_empty() {
            continue;
        }
        let bad = |why: &str| (format!("line {}", i + 1), format!("malformed manifest line ({why}): {line:?}"));
        let (Some(hex), Some(rest)) = (line.get(..64), line.get(64..)) else {
            errors.push(bad("expected 64 hex digits, two spaces and a path"));
            continue;
        };
        if !hex.bytes().all(|b| b.is_ascii_hexdigit()) {
            errors.push(bad("the digest is not 64 hex digits"));
            continue;
        }
        let Some(path) = rest.strip_prefix("  ").or_else(|| rest.strip_prefix(" *")) else {
            errors.push(bad("expected two spaces between digest and path"));
            continue;
        };
        let p = Path::new(path);
        if path.is_empty() || p.components().any(|c| !matches!(c, Component::Normal(_))) {
            errors.push(bad("the path must be relative, without `..`"));
            continue;
        }
        if entries.insert(path.to_string(), hex.to_ascii_lowercase()).is_some() {
            errors.push((path.to_string(), format!("listed twice in the manifest (line {})", i + 1)));
        }
    }
    (entries, errors)
}

/// Verifies every file below `scope` against `manifest` (whose directory must contain
/// `scope`): returns one `ERROR` row per file whose digest differs, per listed file that
/// is missing, per file the manifest does not list, and per malformed manifest line. An
/// empty vector means every file of `scope` is as the manifest says.
pub fn verify_manifest(manifest: &Path, scope: &Path) -> Vec<Row> {
    let mname = manifest.display().to_string();
    let text = match std::fs::metadata(manifest) {
        Ok(m) if m.len() > 64 << 20 => return vec![row(&mname, format!("manifest of {} bytes, more than 64 MiB", m.len()))],
        _ => match std::fs::read_to_string(manifest) {
            Ok(t) => t,
            Err(e) => return vec![row(&mname, format!("cannot read the manifest: {e}"))],
        },
    };
    let (Some(root), Ok(scope_real)) = (manifest.parent().and_then(|p| p.canonicalize().ok()), scope.canonicalize()) else {
        return vec![row(&mname, format!("cannot resolve the manifest's directory or {}", scope.display()))];
    };
    let Ok(prefix) = scope_real.strip_prefix(&root) else {
        return vec![row(&mname, format!("{} is not below the manifest's directory {}", scope.display(), root.display()))];
    };
    let prefix: Vec<String> = prefix.components().map(|c| c.as_os_str().to_string_lossy().into_owned()).collect();
    let in_scope = |rel: &str| {
        let parts: Vec<&str> = rel.split('/').collect();
        parts.len() >= prefix.len() && parts.iter().zip(&prefix).all(|(a, b)| a == b)
    };
    let (entries, errors) = parse_manifest(&text);
    let mut rows: Vec<Row> = errors.into_iter().map(|(f, d)| row(&f, d)).collect();
    let present = match walk(&scope_real, &root) {
        Ok(f) => f,
        Err(e) => {
            rows.push(row(&scope.display().to_string(), e.to_string()));
            return rows;
        }
    };
    for (rel, want) in entries.iter().filter(|(rel, _)| in_scope(rel)) {
        let path = root.join(rel);
        if !path.exists() {
            rows.push(row(rel, "listed in the manifest but missing".into()));
            continue;
        }
        match sha256_file(&path) {
            Ok(got) if &got == want => {}
            Ok(got) => rows.push(row(
                rel,
                format!("SHA-256 {got} differs from the manifest's {want}: the file changed after the manifest was written (regenerate with `make fixtures`, or `diffuse-spec manifest DIR` after a deliberate edit)"),
            )),
            Err(e) => rows.push(row(rel, format!("cannot hash: {e}"))),
        }
    }
    for (rel, _) in present {
        if !entries.contains_key(&rel) {
            rows.push(row(&rel, "not listed in the manifest (added after it was written?)".into()));
        }
    }
    rows
}
