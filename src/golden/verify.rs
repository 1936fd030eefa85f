//! `verify`: compare another implementation's outputs with golden cases, quantity by
//! quantity, with the tolerances of `check`. Needs no libtorch.
//!
//! A candidate directory holds one directory per case, named as the case, with the case's
//! `out.*.npy` / `grad.*.npy` file names. Everything else there (inputs, draws, a copy of
//! `case.json`, notes) is ignored. Candidate files may be float64 (rounded to float32, said
//! in the row) or in fortran order; the golden reader stays strict.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

use super::array::Array;
use super::case::{discover, Case};
use super::header::tolerance_for;
use super::report::{Row, Status};
use super::tolerance::{compare_scaled, max_abs, Scale};
use crate::error::{Error, Result};

/// Which cases a run selects: by name substrings (`--filter`, any of them) and by exact
/// names (`--cases FILE`). Empty means every case.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Selection {
    /// Substrings; a case is selected when its name contains any of them.
    pub filters: Vec<String>,
    /// Exact case names; a case is selected when its name is one of them.
    pub names: Option<BTreeSet<String>>,
}

impl Selection {
    /// Every case.
    pub fn all() -> Selection {
        Selection::default()
    }

    /// Reads `--cases FILE`: one case name per line; blank lines and lines starting with `#`
    /// are ignored.
    pub fn read_names(path: &Path) -> Result<BTreeSet<String>> {
        let text = std::fs::read_to_string(path).map_err(|source| Error::Io { path: path.to_path_buf(), source })?;
        Ok(text.lines().map(str::trim).filter(|l| !l.is_empty() && !l.starts_with('#')).map(str::to_string).collect())
    }

    /// Whether the case `name` is selected. With both filters and names, a case is selected
    /// when it matches either.
    pub fn selects(&self, name: &str) -> bool {
        if self.filters.is_empty() && self.names.is_none() {
            return true;
        }
        self.filters.iter().any(|f| name.contains(f.as_str())) || self.names.as_ref().is_some_and(|n| n.contains(name))
    }
}

/// Quantities not to compare (`--skip`): stems (`out.t`), stem prefixes ending in `*`
/// (`grad.blocks.*`) and roles (`out`, `grad`).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Skip {
    items: Vec<String>,
}

impl Skip {
    /// Skips nothing.
    pub fn none() -> Skip {
        Skip::default()
    }

    /// Parses comma-separated items; an empty item is an error.
    pub fn parse(list: &str) -> Result<Skip> {
        let mut s = Skip::none();
        s.add(list)?;
        Ok(s)
    }

    /// Adds the comma-separated items of `list` (`--skip` may be given more than once).
    pub fn add(&mut self, list: &str) -> Result<()> {
        for item in list.split(',').map(str::trim) {
            if item.is_empty() || item == "*" {
                return Err(Error::invalid("--skip", "comma-separated stems (out.t), prefixes (grad.blocks.*) or roles (out, grad)", format!("`{list}`")));
            }
            self.items.push(item.to_string());
        }
        Ok(())
    }

    /// Whether `stem` is skipped.
    pub fn skips(&self, stem: &str) -> bool {
        self.items.iter().any(|i| {
            if let Some(prefix) = i.strip_suffix('*') {
                stem.starts_with(prefix)
            } else if !i.contains('.') {
                stem.split('.').next() == Some(i.as_str())
            } else {
                stem == i
            }
        })
    }
}

/// The case's gradient scale: the largest finite magnitude over all its expected `grad.*`
/// arrays (`None` when it has none). Tolerances with [`Scale::CaseGradients`] (a gradient that
/// is zero in exact arithmetic, such as the DiT's attention key bias) take `atol` against it.
/// It reads the `grad.*` files again rather than keeping every expected array in memory for
/// the whole case (the comparison loops hold one at a time), and only for cases whose
/// tolerances ask for it.
pub(crate) fn case_grad_scale(case: &Case) -> Option<f64> {
    case.stems("grad.").iter().filter_map(|s| case.array(s).ok()).filter_map(|a| max_abs(&a)).reduce(f64::max)
}

/// Compares one quantity; `grad_scale` computes the case's gradient scale when the quantity's
/// tolerance asks for it (once per case).
pub(crate) fn compare_row(case: &Case, stem: &str, actual: &Array, expected: &Array, grad_scale: &mut Option<Option<f64>>, notes: Vec<String>) -> Row {
    let tol = tolerance_for(&case.header, stem);
    let scale = match tol.scale {
        Scale::CaseGradients => *grad_scale.get_or_insert_with(|| case_grad_scale(case)),
        Scale::Own => None,
    };
    let c = compare_scaled(actual, expected, tol, scale);
    Row::compared(&case.name, case.kind.as_str(), stem, &c, tol, notes)
}

fn dir_name(dir: &Path) -> String {
    dir.file_name().map(|s| s.to_string_lossy().into_owned()).unwrap_or_else(|| dir.display().to_string())
}

/// Compares the candidate `candidate_root/<case name>/` with the golden case in `golden_dir`
/// (see [`verify_case_with`]), skipping nothing.
pub fn verify_case(golden_dir: &Path, candidate_root: &Path) -> Vec<Row> {
    verify_case_with(golden_dir, candidate_root, &Skip::none())
}

/// Compares the candidate `candidate_root/<case name>/` with the golden case in `golden_dir`:
/// one row per expected `out.*` / `grad.*` quantity (`skipped` where `skip` says), a row per
/// candidate output with no golden counterpart, and a failing whole-case row when the
/// candidate directory is missing.
pub fn verify_case_with(golden_dir: &Path, candidate_root: &Path, skip: &Skip) -> Vec<Row> {
    let case = match Case::open(golden_dir) {
        Ok(c) => c,
        Err(e) => return vec![Row::plain(&dir_name(golden_dir), "?", "-", Status::Error, e.to_string())],
    };
    let kind = case.kind.as_str();
    let cand_dir = candidate_root.join(&case.name);
    if !cand_dir.is_dir() {
        return vec![Row::plain(&case.name, kind, "-", Status::Fail, format!("no candidate directory {}", cand_dir.display()))];
    }
    let mut rows = Vec::new();
    let mut grad_scale = None;
    let mut expected_stems = case.stems("out.");
    expected_stems.extend(case.stems("grad."));
    for stem in &expected_stems {
        if skip.skips(stem) {
            rows.push(Row::plain(&case.name, kind, stem, Status::Skipped, "skipped (--skip)"));
            continue;
        }
        let expected = match case.array(stem) {
            Ok(a) => a,
            Err(e) => {
                rows.push(Row::plain(&case.name, kind, stem, Status::Error, e.to_string()));
                continue;
            }
        };
        let path = cand_dir.join(format!("{stem}.npy"));
        if !path.exists() {
            rows.push(Row::plain(&case.name, kind, stem, Status::Fail, format!("candidate lacks {}", path.display())));
            continue;
        }
        match Array::read_npy_candidate(&path) {
            Ok((actual, notes)) => rows.push(compare_row(&case, stem, &actual, &expected, &mut grad_scale, notes)),
            Err(e) => rows.push(Row::plain(&case.name, kind, stem, Status::Error, format!("candidate file {}: {e}", path.display()))),
        }
    }
    match std::fs::read_dir(&cand_dir) {
        Ok(entries) => {
            let mut extra: Vec<String> = entries
                .flatten()
                .filter_map(|e| e.file_name().to_str().and_then(|f| f.strip_suffix(".npy")).map(str::to_string))
                .filter(|stem| (stem.starts_with("out.") || stem.starts_with("grad.")) && !expected_stems.contains(stem))
                .collect();
            extra.sort();
            for stem in extra {
                rows.push(Row::plain(&case.name, kind, &stem, Status::Error, "candidate output with no golden counterpart (a misnamed file?)"));
            }
        }
        Err(e) => rows.push(Row::plain(&case.name, kind, "-", Status::Error, format!("cannot list {}: {e}", cand_dir.display()))),
    }
    if rows.is_empty() {
        rows.push(Row::plain(&case.name, kind, "-", Status::Error, "the golden case has no expected output"));
    }
    rows
}

/// The golden cases under `roots` that `selection` selects, sorted by name within each root.
pub fn selected_cases(roots: &[PathBuf], selection: &Selection) -> Result<Vec<PathBuf>> {
    let mut out = Vec::new();
    for root in roots {
        let cases = discover(root)?;
        if cases.is_empty() {
            return Err(Error::invalid("DIR", "a directory holding at least one case (a directory with case.json)", root.display()));
        }
        out.extend(cases.into_iter().filter(|c| selection.selects(&dir_name(c))));
    }
    Ok(out)
}

/// Rows for names of `--cases` that no golden case has (a typo must not pass silently).
pub fn unmatched_names(cases: &[PathBuf], selection: &Selection) -> Vec<Row> {
    let Some(names) = &selection.names else { return vec![] };
    let have: BTreeSet<String> = cases.iter().map(|c| dir_name(c)).collect();
    names.iter().filter(|n| !have.contains(*n)).map(|n| Row::plain(n, "?", "-", Status::Error, "named in --cases but no golden case has this name")).collect()
}

/// Rows for candidate case directories that no selected golden case matches (an
/// implementation writing a misnamed case must hear of it).
pub fn orphan_candidates(candidate_root: &Path, all_golden: &[PathBuf], selection: &Selection) -> Vec<Row> {
    let known: BTreeSet<String> = all_golden.iter().map(|c| dir_name(c)).collect();
    let Ok(entries) = std::fs::read_dir(candidate_root) else { return vec![] };
    let mut names: Vec<String> = entries
        .flatten()
        .filter(|e| e.path().is_dir())
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| !known.contains(n) && selection.selects(n))
        .collect();
    names.sort();
    names.into_iter().map(|n| Row::plain(&n, "?", "-", Status::Error, "candidate case directory with no golden counterpart")).collect()
}

/// `verify` over golden roots: the manifest first (as `check`), then every selected case,
/// then the `--cases` names that match nothing and the candidate directories that no golden
/// case has. Errors only when a root cannot be listed; an empty selection gives no rows
/// (the CLI makes that a usage error).
pub fn verify_roots(roots: &[PathBuf], candidate_root: &Path, selection: &Selection, skip: &Skip) -> Result<Vec<Row>> {
    let mut rows = Vec::new();
    for root in roots {
        if let Some(m) = super::manifest::find_manifest(root) {
            rows.extend(super::manifest::verify_manifest(&m, root));
        }
    }
    let cases = selected_cases(roots, selection)?;
    let all = selected_cases(roots, &Selection::all())?;
    for c in &cases {
        rows.extend(verify_case_with(c, candidate_root, skip));
    }
    rows.extend(unmatched_names(&all, selection));
    if !cases.is_empty() {
        rows.extend(orphan_candidates(candidate_root, &all, selection));
    }
    Ok(rows)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn skip_items_are_stems_prefixes_or_roles() {
        let s = Skip::parse("out.t, grad.blocks.*,out.n").unwrap();
        assert!(s.skips("out.t") && s.skips("out.n") && s.skips("grad.blocks.0.attn.key.bias"));
        assert!(!s.skips("out.target") && !s.skips("grad.x_proj.kernel"));
        let r = Skip::parse("grad").unwrap();
        assert!(r.skips("grad.W1") && !r.skips("out.loss"));
        assert!(Skip::parse("out.t,,out.n").is_err() && Skip::parse("*").is_err());
    }

    #[test]
    fn selection_by_substrings_and_names() {
        let all = Selection::all();
        assert!(all.selects("anything"));
        let s = Selection { filters: vec!["sit".into(), "edm_".into()], names: None };
        assert!(s.selects("sit_a") && s.selects("x_edm_y") && !s.selects("meanflow"));
        let n = Selection { filters: vec![], names: Some(["a".to_string()].into()) };
        assert!(n.selects("a") && !n.selects("ab"));
    }
}
