//! The conformance table: one row per (case, quantity), as text or JSON lines.
//!
//! A row's JSON form (`--json`) is described by `docs/schemas/verify-row.schema.json`: every
//! number is a JSON number, and a value that is not finite is written as the string `"NaN"`,
//! `"Infinity"` or `"-Infinity"` (never as a sentinel number).

use serde::{Serialize, Serializer};

use super::tolerance::{Comparison, Scale, Tolerance};

/// The status of one row.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Status {
    /// Within tolerance.
    Pass,
    /// Outside tolerance, of another shape, or an expected file was not produced.
    Fail,
    /// The case or a candidate file could not be read or replayed (malformed case, library
    /// error, unreadable file, an output with no counterpart, a manifest mismatch).
    Error,
    /// Not compared, because the caller asked (`verify --skip`). Never counted as a pass.
    Skipped,
    /// The case's kind (or a setting of it) is not implemented yet. Never counted as a pass.
    NotImplemented,
}

impl Status {
    /// The word printed in the table.
    pub fn as_str(self) -> &'static str {
        match self {
            Status::Pass => "pass",
            Status::Fail => "FAIL",
            Status::Error => "ERROR",
            Status::Skipped => "skipped",
            Status::NotImplemented => "not implemented",
        }
    }
}

/// A float for JSON: a number when finite, else `"NaN"`, `"Infinity"` or `"-Infinity"`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Num(pub f64);

impl Serialize for Num {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let v = self.0;
        if v.is_finite() {
            s.serialize_f64(v)
        } else if v.is_nan() {
            s.serialize_str("NaN")
        } else if v > 0.0 {
            s.serialize_str("Infinity")
        } else {
            s.serialize_str("-Infinity")
        }
    }
}

/// A tolerance as a row states it.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ToleranceSpec {
    /// Relative tolerance per element.
    pub rtol: f64,
    /// Absolute tolerance as a fraction of `scale_value`.
    pub atol: f64,
    /// Ulp budget per element.
    pub max_ulp: u64,
    /// What `atol` is a fraction of: `own` (the expected array's largest finite magnitude)
    /// or `case_gradients` (the largest over all of the case's expected gradients).
    pub scale: &'static str,
    /// The value of that scale for this row.
    pub scale_value: Num,
    /// The rule in words.
    pub text: String,
}

impl ToleranceSpec {
    /// The spec of `tol` with the scale value used.
    pub fn new(tol: Tolerance, scale_value: f64) -> ToleranceSpec {
        ToleranceSpec {
            rtol: tol.rtol,
            atol: tol.atol,
            max_ulp: tol.max_ulp,
            scale: match tol.scale {
                Scale::Own => "own",
                Scale::CaseGradients => "case_gradients",
            },
            scale_value: Num(scale_value),
            text: tol.to_string(),
        }
    }
}

/// One line of the conformance table.
#[derive(Debug, Clone, Serialize)]
pub struct Row {
    /// Case name (the manifest's file name for a manifest row).
    pub case: String,
    /// Case kind (`manifest` for a manifest row, `?` when the case could not be read).
    pub kind: String,
    /// The quantity (file stem such as `out.loss`), or `-` for a whole-case status.
    pub quantity: String,
    /// The outcome.
    pub status: Status,
    /// Worst ulp distance; `None` where nothing was compared or where an element is not
    /// measurable in ulps (a NaN or infinity against another value).
    pub worst_ulp: Option<u64>,
    /// Worst relative error; `None` where nothing was compared.
    pub worst_rel: Option<Num>,
    /// The tolerance the quantity was judged by.
    pub tolerance: Option<ToleranceSpec>,
    /// The multi-index of the worst element (the one furthest outside the tolerance, else
    /// the worst-ulp one).
    pub worst_index: Option<Vec<usize>>,
    /// The expected value at `worst_index`.
    pub expected: Option<Num>,
    /// The computed (candidate) value at `worst_index`.
    pub actual: Option<Num>,
    /// How many elements are outside the tolerance.
    pub outside: Option<usize>,
    /// How many elements were compared.
    pub compared: Option<usize>,
    /// Remarks on how the quantity was read (a float64 candidate rounded, fortran order).
    pub notes: Vec<String>,
    /// Where the worst element is, or the error message.
    pub detail: String,
}

impl Row {
    /// A row without numbers: a whole-case status (`quantity` `-`) or one quantity's.
    pub fn plain(case: &str, kind: &str, quantity: &str, status: Status, detail: impl Into<String>) -> Row {
        Row {
            case: case.into(),
            kind: kind.into(),
            quantity: quantity.into(),
            status,
            worst_ulp: None,
            worst_rel: None,
            tolerance: None,
            worst_index: None,
            expected: None,
            actual: None,
            outside: None,
            compared: None,
            notes: vec![],
            detail: detail.into(),
        }
    }

    /// The row of one compared quantity.
    pub fn compared(case: &str, kind: &str, quantity: &str, c: &Comparison, tol: Tolerance, notes: Vec<String>) -> Row {
        let mut detail = format!("{} (tolerance {tol}", c.detail());
        if tol.scale == Scale::CaseGradients {
            detail.push_str(&format!(", case gradient scale {:.3e}", c.scale));
        }
        detail.push(')');
        for n in &notes {
            detail.push_str(&format!("; {n}"));
        }
        let numeric = c.mismatch.is_none();
        Row {
            status: if c.passed { Status::Pass } else { Status::Fail },
            worst_ulp: if numeric { c.worst_ulp } else { None },
            worst_rel: numeric.then_some(Num(c.worst_rel)),
            tolerance: Some(ToleranceSpec::new(tol, c.scale)),
            worst_index: (numeric && c.expected_at_worst.is_some()).then(|| c.worst_at.clone()),
            expected: c.expected_at_worst.map(Num),
            actual: c.actual_at_worst.map(Num),
            outside: numeric.then_some(c.n_bad),
            compared: numeric.then_some(c.n),
            notes,
            ..Row::plain(case, kind, quantity, Status::Pass, detail)
        }
    }
}

/// Counts of case outcomes. A case is `failed` when a row of it failed or errored (and
/// also counted in `errors` when one errored), `not_implemented` when a row says so,
/// `skipped` when every row was skipped, and `passed` otherwise.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct Summary {
    /// Cases whose every compared quantity passed.
    pub passed: usize,
    /// Cases with a failing or erroring row.
    pub failed: usize,
    /// Of `failed`, the cases with an erroring row.
    pub errors: usize,
    /// Cases of which every row was skipped.
    pub skipped: usize,
    /// Cases not implemented yet.
    pub not_implemented: usize,
}

impl Summary {
    /// Summarizes rows case by case (rows of one case are contiguous).
    pub fn of(rows: &[Row]) -> Summary {
        let mut s = Summary::default();
        for case in rows.chunk_by(|a, b| a.case == b.case) {
            let has = |st: Status| case.iter().any(|r| r.status == st);
            if has(Status::Fail) || has(Status::Error) {
                s.failed += 1;
                s.errors += usize::from(has(Status::Error));
            } else if has(Status::NotImplemented) {
                s.not_implemented += 1;
            } else if case.iter().all(|r| r.status == Status::Skipped) {
                s.skipped += 1;
            } else {
                s.passed += 1;
            }
        }
        s
    }

    /// The one-line summary `N passed, N failed, N skipped, N not implemented`.
    pub fn line(&self) -> String {
        format!("{} passed, {} failed, {} skipped, {} not implemented", self.passed, self.failed, self.skipped, self.not_implemented)
    }

    /// The exit status of `check` and `verify`: 0 when no case failed, 3 when some row is an
    /// error (a case, file or candidate could not be read or replayed), 1 when quantities
    /// failed but everything could be read. (2 is a usage error, decided by the CLI.)
    pub fn exit_code(&self) -> u8 {
        if self.errors > 0 {
            3
        } else if self.failed > 0 {
            1
        } else {
            0
        }
    }
}

fn fmt_ulp(u: Option<u64>, compared: bool) -> String {
    match u {
        Some(u) => u.to_string(),
        None if compared => "nan".into(),
        None => "-".into(),
    }
}

fn fmt_rel(r: Option<Num>) -> String {
    match r {
        None => "-".into(),
        Some(Num(r)) if r == 0.0 => "0".into(),
        Some(Num(r)) if r.is_infinite() => "inf".into(),
        Some(Num(r)) => format!("{r:.2e}"),
    }
}

/// Renders rows as an aligned text table (details of passing rows are omitted).
pub fn table(rows: &[Row]) -> String {
    let head = ["case", "kind", "quantity", "worst ulp", "worst rel", "status"];
    let cells: Vec<[String; 6]> = rows
        .iter()
        .map(|r| {
            [
                r.case.clone(),
                r.kind.clone(),
                r.quantity.clone(),
                fmt_ulp(r.worst_ulp, r.compared.is_some()),
                fmt_rel(r.worst_rel),
                if r.status == Status::Pass { "pass".into() } else { format!("{}: {}", r.status.as_str(), r.detail) },
            ]
        })
        .collect();
    let mut w = head.map(str::len);
    for c in &cells {
        for (i, s) in c.iter().enumerate().take(5) {
            w[i] = w[i].max(s.len());
        }
    }
    let mut out = String::new();
    let line = |c: &[String; 6]| {
        format!("{:<w0$}  {:<w1$}  {:<w2$}  {:>w3$}  {:>w4$}  {}\n", c[0], c[1], c[2], c[3], c[4], c[5], w0 = w[0], w1 = w[1], w2 = w[2], w3 = w[3], w4 = w[4])
    };
    out.push_str(&line(&head.map(String::from)));
    for c in &cells {
        out.push_str(&line(c));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn non_finite_numbers_are_strings_in_json() {
        let j = |v: f64| serde_json::to_string(&Num(v)).unwrap();
        assert_eq!((j(1.5), j(f64::NAN), j(f64::INFINITY), j(f64::NEG_INFINITY)), ("1.5".into(), "\"NaN\"".into(), "\"Infinity\"".into(), "\"-Infinity\"".into()));
    }

    #[test]
    fn summary_counts_cases_and_chooses_the_exit_code() {
        let r = |case: &str, st| Row::plain(case, "loss", "out.loss", st, "");
        let rows = vec![r("a", Status::Pass), r("a", Status::Skipped), r("b", Status::Skipped), r("c", Status::Fail), r("d", Status::NotImplemented)];
        let s = Summary::of(&rows);
        assert_eq!((s.passed, s.skipped, s.failed, s.errors, s.not_implemented), (1, 1, 1, 0, 1));
        assert_eq!(s.line(), "1 passed, 1 failed, 1 skipped, 1 not implemented");
        assert_eq!(s.exit_code(), 1);
        assert_eq!(Summary::of(&[r("a", Status::Fail), r("a", Status::Error)]).exit_code(), 3);
        assert_eq!(Summary::of(&[r("a", Status::Pass)]).exit_code(), 0);
    }
}
