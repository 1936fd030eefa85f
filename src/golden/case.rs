//! The strict reader of golden cases (format v1, described for port authors in `docs/format.md`).
//!
//! A case is a directory with `case.json` and `.npy` files named by role
//! (`in.`, `param.`, `buffer.`, `draw.`, `out.`, `grad.`). The reader refuses an unknown
//! `kind`, a missing file, a stray file, a symlink leading out of the case
//! directory and an unsupported format version, and it records which files were
//! read so that the harness can refuse a file nobody read.

use std::cell::RefCell;
use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

use serde::de::DeserializeOwned;
#[cfg(feature = "torch")]
use tch::{Device, Tensor};

use super::array::Array;
use super::header::CaseHeader;
use crate::error::{Error, Result};

/// Largest `case.json` accepted (bytes).
pub const MAX_CASE_JSON_BYTES: u64 = 1 << 20;

/// The roles a case file can have, as file-name prefixes: inputs, network parameters and
/// buffers, the raw random draws the computation consumed, expected outputs and expected
/// gradients.
pub const ROLES: [&str; 6] = ["in.", "param.", "buffer.", "draw.", "out.", "grad."];

/// The kinds of golden case (format v1).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum CaseKind {
    /// Random-stream calls.
    Rng,
    /// Interface coefficients and `t_shift`.
    Coefficients,
    /// A per-example loss and its intermediates.
    Loss,
    /// A loss plus the gradients of its mean.
    Grad,
    /// `pred` and `score`.
    Pred,
    /// A full sampling run.
    Sampler,
    /// A backbone alone.
    Network,
    /// A REPA feature detector alone (DINOv2: preprocess and ViT).
    Encoder,
}

impl CaseKind {
    /// Every kind, in the order of docs/format.md.
    pub const ALL: [CaseKind; 8] = [
        CaseKind::Rng,
        CaseKind::Coefficients,
        CaseKind::Loss,
        CaseKind::Grad,
        CaseKind::Pred,
        CaseKind::Sampler,
        CaseKind::Network,
        CaseKind::Encoder,
    ];

    /// The kind's name as written in `case.json`.
    pub fn as_str(self) -> &'static str {
        match self {
            CaseKind::Rng => "rng",
            CaseKind::Coefficients => "coefficients",
            CaseKind::Loss => "loss",
            CaseKind::Grad => "grad",
            CaseKind::Pred => "pred",
            CaseKind::Sampler => "sampler",
            CaseKind::Network => "network",
            CaseKind::Encoder => "encoder",
        }
    }

    /// Parses a kind name.
    pub fn parse(s: &str) -> Result<CaseKind> {
        CaseKind::ALL.into_iter().find(|k| k.as_str() == s).ok_or_else(|| Error::Unknown {
            what: "case kind".into(),
            name: s.into(),
            known: CaseKind::ALL.map(|k| k.as_str()).join(", "),
        })
    }
}

impl std::fmt::Display for CaseKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One opened golden case.
#[derive(Debug)]
pub struct Case {
    /// The case directory.
    pub dir: PathBuf,
    /// `name` from case.json (equal to the directory name).
    pub name: String,
    /// `kind` from case.json.
    pub kind: CaseKind,
    /// The whole case.json object.
    pub meta: serde_json::Map<String, serde_json::Value>,
    /// The typed header (block types, REPA, recorded draws).
    pub header: CaseHeader,
    files: BTreeMap<String, PathBuf>,
    used: RefCell<BTreeSet<String>>,
}

impl Case {
    /// Opens and validates a case directory (does not read the arrays yet).
    pub fn open(dir: &Path) -> Result<Case> {
        let dir_name = dir.file_name().map(|s| s.to_string_lossy().into_owned()).unwrap_or_else(|| dir.display().to_string());
        let err = |file: Option<&str>, msg: String| Error::case(dir_name.clone(), file, msg);
        let io = |p: &Path, source| Error::Io { path: p.to_path_buf(), source };
        let canon = dir.canonicalize().map_err(|e| io(dir, e))?;
        let json_path = dir.join("case.json");
        // case.json itself must be a regular file inside the case directory (a FIFO would
        // block the reader; a symlink could lead anywhere).
        let json_real = json_path.canonicalize().map_err(|e| io(&json_path, e))?;
        if !json_real.starts_with(&canon) {
            return Err(err(Some("case.json"), format!("leads out of the case directory (to {})", json_real.display())));
        }
        let json_meta = std::fs::metadata(&json_real).map_err(|e| io(&json_path, e))?;
        if !json_meta.is_file() {
            return Err(err(Some("case.json"), "not a regular file".into()));
        }
        if json_meta.len() > MAX_CASE_JSON_BYTES {
            return Err(err(Some("case.json"), format!("{} bytes, more than the {MAX_CASE_JSON_BYTES} accepted", json_meta.len())));
        }
        let mut raw = Vec::new();
        {
            use std::io::Read;
            let f = std::fs::File::open(&json_real).map_err(|e| io(&json_path, e))?;
            f.take(MAX_CASE_JSON_BYTES + 1).read_to_end(&mut raw).map_err(|e| io(&json_path, e))?;
        }
        let text = String::from_utf8(raw).map_err(|e| err(Some("case.json"), format!("not UTF-8 text (invalid byte at {})", e.utf8_error().valid_up_to())))?;
        let CaseJson { name, kind, meta } = parse_case_json(&text, &dir_name)?;
        let mut files = BTreeMap::new();
        let entries = std::fs::read_dir(dir).map_err(|e| io(dir, e))?;
        for entry in entries {
            let entry = entry.map_err(|e| io(dir, e))?;
            let fname = entry.file_name().to_string_lossy().into_owned();
            if fname == "case.json" {
                continue;
            }
            let path = entry.path();
            let real = path.canonicalize().map_err(|e| io(&path, e))?;
            if !real.starts_with(&canon) {
                return Err(err(Some(&fname), format!("leads out of the case directory (to {})", real.display())));
            }
            if !real.is_file() {
                return Err(err(Some(&fname), "not a regular file".into()));
            }
            let Some(stem) = fname.strip_suffix(".npy") else {
                return Err(err(Some(&fname), "stray file (only case.json and .npy files belong in a case)".into()));
            };
            if !ROLES.iter().any(|r| stem.starts_with(r) && stem.len() > r.len()) {
                return Err(err(Some(&fname), format!("unknown role; file names start with one of {}", ROLES.join(" "))));
            }
            files.insert(stem.to_string(), path);
        }
        let header = CaseHeader::from_meta(&name, kind, &meta)?;
        let listed: BTreeSet<&str> = header.draws.iter().flatten().map(|d| d.file.as_str()).collect();
        for stem in files.keys().filter(|s| s.starts_with("draw.")) {
            if !listed.contains(stem.as_str()) {
                return Err(err(Some(&format!("{stem}.npy")), "a draw file that case.json's `draws` does not list".into()));
            }
        }
        for stem in &listed {
            if !files.contains_key(*stem) {
                return Err(err(Some(&format!("{stem}.npy")), "listed in case.json's `draws` but missing".into()));
            }
        }
        Ok(Case { dir: dir.to_path_buf(), name, kind, meta, header, files, used: RefCell::new(BTreeSet::new()) })
    }

    /// Deserializes the case settings (the whole case.json) into `T`.
    pub fn settings<T: DeserializeOwned>(&self) -> Result<T> {
        serde_json::from_value(serde_json::Value::Object(self.meta.clone()))
            .map_err(|e| Error::case(&self.name, Some("case.json"), format!("settings: {e}")))
    }

    /// Whether the case has the file `<stem>.npy`.
    pub fn has(&self, stem: &str) -> bool {
        self.files.contains_key(stem)
    }

    /// All stems starting with `prefix`, sorted.
    pub fn stems(&self, prefix: &str) -> Vec<String> {
        self.files.keys().filter(|s| s.starts_with(prefix)).cloned().collect()
    }

    /// Reads `<stem>.npy` and marks it as read. A missing file is an error naming the case.
    pub fn array(&self, stem: &str) -> Result<Array> {
        let file = format!("{stem}.npy");
        let path = self.files.get(stem).ok_or_else(|| Error::case(&self.name, Some(&file), "missing"))?;
        self.used.borrow_mut().insert(stem.to_string());
        Array::read_npy(path).map_err(|e| match e {
            Error::Case { .. } => e,
            other => Error::case(&self.name, Some(&file), other.to_string()),
        })
    }

    /// Like [`Case::array`], `None` when the file is absent.
    pub fn opt_array(&self, stem: &str) -> Result<Option<Array>> {
        if self.has(stem) {
            self.array(stem).map(Some)
        } else {
            Ok(None)
        }
    }

    #[cfg(feature = "torch")]
    /// Reads `<stem>.npy` as a tensor on `device`, checking its dtype (`"<f4"`, `"<i4"`, `"<u4"`)
    /// and, when given, its shape.
    pub fn tensor(&self, stem: &str, dtype: &str, shape: Option<&[usize]>, device: Device) -> Result<Tensor> {
        let a = self.array(stem)?;
        self.check(stem, &a, dtype, shape)?;
        a.to_tensor(device)
    }

    #[cfg(feature = "torch")]
    /// Like [`Case::tensor`], `None` when the file is absent.
    pub fn opt_tensor(&self, stem: &str, dtype: &str, shape: Option<&[usize]>, device: Device) -> Result<Option<Tensor>> {
        if self.has(stem) {
            self.tensor(stem, dtype, shape, device).map(Some)
        } else {
            Ok(None)
        }
    }

    /// Errors (naming the case and file) unless `a` has `dtype` and, when given, `shape`.
    pub fn check(&self, stem: &str, a: &Array, dtype: &str, shape: Option<&[usize]>) -> Result<()> {
        let file = format!("{stem}.npy");
        if a.dtype() != dtype {
            return Err(Error::case(&self.name, Some(&file), format!("dtype {} where {dtype} is expected", a.dtype())));
        }
        if let Some(s) = shape {
            if a.shape != s {
                return Err(Error::case(&self.name, Some(&file), format!("shape {:?} where {s:?} is expected", a.shape)));
            }
        }
        Ok(())
    }

    /// Marks a stem as read without reading it (used by comparisons that read the file themselves).
    pub fn mark_read(&self, stem: &str) {
        self.used.borrow_mut().insert(stem.to_string());
    }

    /// Files present in the case that nothing has read.
    pub fn unread(&self) -> Vec<String> {
        let used = self.used.borrow();
        self.files.keys().filter(|s| !used.contains(*s)).map(|s| format!("{s}.npy")).collect()
    }

    /// An error about this case.
    pub fn error(&self, file: Option<&str>, message: impl Into<String>) -> Error {
        Error::case(&self.name, file, message)
    }
}

/// The validated top of a `case.json` (see [`parse_case_json`]).
#[derive(Debug, Clone, PartialEq)]
pub struct CaseJson {
    /// `name` (equal to the directory name).
    pub name: String,
    /// `kind`.
    pub kind: CaseKind,
    /// The whole object.
    pub meta: serde_json::Map<String, serde_json::Value>,
}

/// Parses the text of a `case.json` found in a directory named `dir_name`, without touching
/// the file system: a JSON object (at most [`MAX_CASE_JSON_BYTES`]) with `format` 1, a
/// string `name` equal to `dir_name` and a known `kind`. Errors are [`Error::Case`] naming
/// `dir_name` and `case.json`. The work is done by the pure `golden/parse.rs`, which
/// `fuzz/` includes and fuzzes.
pub fn parse_case_json(text: &str, dir_name: &str) -> Result<CaseJson> {
    let c = super::parse::parse_case_json(text, dir_name).map_err(|msg| Error::case(dir_name, Some("case.json"), msg))?;
    let kind = CaseKind::parse(&c.kind).map_err(|e| Error::case(dir_name, Some("case.json"), e.to_string()))?;
    Ok(CaseJson { name: c.name, kind, meta: c.meta })
}

/// Every case directory under `root` (a directory containing `case.json`), sorted by path.
/// `root` may itself be a case directory.
pub fn discover(root: &Path) -> Result<Vec<PathBuf>> {
    let io = |p: &Path, source| Error::Io { path: p.to_path_buf(), source };
    let mut out = Vec::new();
    let mut stack = vec![root.to_path_buf()];
    while let Some(dir) = stack.pop() {
        if dir.join("case.json").exists() {
            out.push(dir);
            continue;
        }
        for entry in std::fs::read_dir(&dir).map_err(|e| io(&dir, e))? {
            let entry = entry.map_err(|e| io(&dir, e))?;
            let ft = entry.file_type().map_err(|e| io(&entry.path(), e))?;
            if ft.is_dir() {
                stack.push(entry.path());
            }
        }
    }
    out.sort();
    Ok(out)
}
