//! The conformance table: one row per (case, quantity), as text or JSON lines.

use serde::Serialize;

/// The status of one row.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Status {
    /// Within tolerance.
    Pass,
    /// Outside tolerance, or an expected file was not produced.
    Fail,
    /// The case could not be read or replayed (malformed case, library error).
    Error,
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
            Status::NotImplemented => "not implemented",
        }
    }
}

/// One line of the conformance table.
#[derive(Debug, Clone, Serialize)]
pub struct Row {
    /// Case name.
    pub case: String,
    /// Case kind.
    pub kind: String,
    /// The quantity (file stem such as `out.loss`), or `-` for a whole-case status.
    pub quantity: String,
    /// Worst ulp distance (None where not compared).
    pub worst_ulp: Option<u64>,
    /// Worst relative error (None where not compared).
    pub worst_rel: Option<f64>,
    /// The outcome.
    pub status: Status,
    /// Where the worst element is, or the error message.
    pub detail: String,
}

/// Counts of case outcomes: a case passes when all of its rows pass.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct Summary {
    /// Cases whose every quantity passed.
    pub passed: usize,
    /// Cases with a failing quantity or an error.
    pub failed: usize,
    /// Cases not implemented yet.
    pub not_implemented: usize,
}

impl Summary {
    /// Summarizes rows case by case (rows of one case are contiguous).
    pub fn of(rows: &[Row]) -> Summary {
        let mut s = Summary::default();
        let mut i = 0;
        while i < rows.len() {
            let mut j = i;
            while j < rows.len() && rows[j].case == rows[i].case {
                j += 1;
            }
            let case = &rows[i..j];
            if case.iter().any(|r| matches!(r.status, Status::Fail | Status::Error)) {
                s.failed += 1;
            } else if case.iter().any(|r| r.status == Status::NotImplemented) {
                s.not_implemented += 1;
            } else {
                s.passed += 1;
            }
            i = j;
        }
        s
    }

    /// The one-line summary `N passed, N failed, N not implemented`.
    pub fn line(&self) -> String {
        format!("{} passed, {} failed, {} not implemented", self.passed, self.failed, self.not_implemented)
    }
}

fn fmt_ulp(u: Option<u64>) -> String {
    match u {
        None => "-".into(),
        Some(u64::MAX) => "nan".into(),
        Some(u) => u.to_string(),
    }
}

fn fmt_rel(r: Option<f64>) -> String {
    match r {
        None => "-".into(),
        Some(r) if r == 0.0 => "0".into(),
        Some(r) => format!("{r:.2e}"),
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
                fmt_ulp(r.worst_ulp),
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
