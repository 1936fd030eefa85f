//! `check`: replay a case with the library and compare every expected output, and every
//! raw draw the case records, with what the replay computed and consumed.

use std::path::Path;

use super::array::Array;
use super::case::Case;
use super::header::{feeds, required, DrawEntry, DrawOp};
use super::replay::{self, ReplayOptions, Replayed};
use super::report::{Row, Status};
use super::verify::compare_row;
use crate::error::{Error, Result};
use crate::rng::{Draw, DrawKind, DrawValues};

fn dir_name(dir: &Path) -> String {
    dir.file_name().map(|s| s.to_string_lossy().into_owned()).unwrap_or_else(|| dir.display().to_string())
}

/// Replays the case in `dir` on `device` and compares every expected output.
///
/// Rows: one per expected quantity and per recorded draw; or one whole-case row when the
/// case is malformed (`ERROR`), its kind is not implemented (`not implemented`), or the
/// replay failed (`ERROR`). A file that nothing read is an `ERROR` row.
pub fn check_case(dir: &Path, device: tch::Device) -> Vec<Row> {
    check_case_with(dir, &ReplayOptions::on(device))
}

/// [`check_case`] with replay options (device, JVP backend override).
pub fn check_case_with(dir: &Path, opts: &ReplayOptions) -> Vec<Row> {
    check_case_dumping(dir, opts, None)
}

/// The listing entry of a consumed draw, labelled `feeds`.
pub fn draw_entry(d: &Draw, feeds: String) -> DrawEntry {
    let (op, minval, maxval) = match d.kind {
        DrawKind::Uniform { minval, maxval } if (minval, maxval) == (0.0, 1.0) => (DrawOp::Uniform, None, None),
        DrawKind::Uniform { minval, maxval } => (DrawOp::Uniform, Some(minval), Some(maxval)),
        DrawKind::Normal => (DrawOp::Normal, None, None),
        DrawKind::Bits => (DrawOp::Bits, None, None),
    };
    DrawEntry {
        file: DrawEntry::stem(&d.stream, d.counter),
        stream: d.stream.clone(),
        counter: d.counter,
        op,
        shape: d.shape.iter().map(|&s| s as usize).collect(),
        feeds,
        minval,
        maxval,
    }
}

/// A consumed draw's values as an array of its shape.
pub fn draw_array(d: &Draw) -> Result<Array> {
    let shape: Vec<usize> = d.shape.iter().map(|&s| s as usize).collect();
    match &d.values {
        DrawValues::F32(v) => Array::f32(shape, v.clone()),
        DrawValues::U32(v) => Array::u32(shape, v.clone()),
    }
}

/// The rows comparing the draws a replay consumed with those the case records (none when the
/// case records none, as the reference's own cases).
fn draw_rows(case: &Case, consumed: &[Draw]) -> Vec<Row> {
    let Some(listed) = &case.header.draws else { return vec![] };
    let kind = case.kind.as_str();
    let labels = feeds(&case.header, consumed.len());
    let mut rows = Vec::new();
    let mut grad_scale = None;
    for (d, label) in consumed.iter().zip(labels) {
        let got = draw_entry(d, label);
        let Some(want) = listed.iter().find(|e| e.file == got.file) else {
            rows.push(Row::plain(&case.name, kind, &got.file, Status::Error, format!("the replay drew {} ({} {:?}, feeds {}), which the case does not record", got.file, got.op.as_str(), got.shape, got.feeds)));
            continue;
        };
        if (want.op, &want.shape, want.minval, want.maxval, &want.feeds) != (got.op, &got.shape, got.minval, got.maxval, &got.feeds) {
            rows.push(Row::plain(
                &case.name,
                kind,
                &got.file,
                Status::Fail,
                format!("the case records {} as {} {:?} feeding {}, the replay drew {} {:?} feeding {}", got.file, want.op.as_str(), want.shape, want.feeds, got.op.as_str(), got.shape, got.feeds),
            ));
            case.mark_read(&got.file);
            continue;
        }
        let row = match (case.array(&got.file), draw_array(d)) {
            (Ok(expected), Ok(actual)) => compare_row(case, &got.file, &actual, &expected, &mut grad_scale, vec![]),
            (Err(e), _) | (_, Err(e)) => Row::plain(&case.name, kind, &got.file, Status::Error, e.to_string()),
        };
        rows.push(row);
    }
    for e in listed {
        if !consumed.iter().any(|d| DrawEntry::stem(&d.stream, d.counter) == e.file) {
            case.mark_read(&e.file);
            rows.push(Row::plain(&case.name, kind, &e.file, Status::Error, format!("the case records {} (feeds {}) but the replay never drew it", e.file, e.feeds)));
        }
    }
    rows
}

/// [`check_case_with`] that also writes, when `dump` is given, the candidate that `verify`
/// reads: `dump/<case name>/<stem>.npy` for every expected output the case holds, and every
/// draw the replay consumed as `draw.<stream>.<counter>.npy` with their listing in
/// `draws.json` (the `draws` block a case of one's own can take). A failed write is an
/// `ERROR` row.
pub fn check_case_dumping(dir: &Path, opts: &ReplayOptions, dump: Option<&Path>) -> Vec<Row> {
    let case = match Case::open(dir) {
        Ok(c) => c,
        Err(e) => return vec![Row::plain(&dir_name(dir), "?", "-", Status::Error, e.to_string())],
    };
    let kind = case.kind.as_str();
    let replayed = match replay::run(&case, opts) {
        Ok(c) => c,
        Err(Error::NotImplemented(what)) => return vec![Row::plain(&case.name, kind, "-", Status::NotImplemented, what)],
        Err(e) => return vec![Row::plain(&case.name, kind, "-", Status::Error, e.to_string())],
    };
    let mut rows = Vec::new();
    if let Some(root) = dump {
        if let Err(e) = dump_replayed(&root.join(&case.name), &case, &replayed) {
            rows.push(Row::plain(&case.name, kind, "-", Status::Error, format!("--dump: {e}")));
        }
    }
    let computed = &replayed.outputs;
    let mut grad_scale = None;
    let mut expected_stems = case.stems("out.");
    expected_stems.extend(case.stems("grad."));
    for stem in expected_stems {
        let expected = match case.array(&stem) {
            Ok(a) => a,
            Err(e) => {
                rows.push(Row::plain(&case.name, kind, &stem, Status::Error, e.to_string()));
                continue;
            }
        };
        match computed.get(&stem) {
            Some(actual) => rows.push(compare_row(&case, &stem, actual, &expected, &mut grad_scale, vec![])),
            None => rows.push(Row::plain(&case.name, kind, &stem, Status::Fail, "expected output that the replay does not produce")),
        }
    }
    rows.extend(draw_rows(&case, &replayed.draws));
    for stem in computed.keys() {
        if required(stem) && !case.has(stem) {
            rows.push(Row::plain(&case.name, kind, stem, Status::Error, "the case lacks this expected output file"));
        }
    }
    let unread = case.unread();
    if !unread.is_empty() {
        rows.push(Row::plain(&case.name, kind, "-", Status::Error, format!("files nobody read: {}", unread.join(", "))));
    }
    if rows.is_empty() {
        rows.push(Row::plain(&case.name, kind, "-", Status::Error, "the case has no expected output"));
    }
    rows
}

fn dump_replayed(dir: &Path, case: &Case, replayed: &Replayed) -> Result<()> {
    let io = |p: &Path| {
        let p = p.to_path_buf();
        move |source| Error::Io { path: p, source }
    };
    std::fs::create_dir_all(dir).map_err(io(dir))?;
    // What the case expects, so that `check --dump` then `verify` is a round trip; a case of
    // one's own with no expected file of a stem gets none.
    for (stem, a) in replayed.outputs.iter().filter(|(s, _)| case.has(s)) {
        a.write_npy(&dir.join(format!("{stem}.npy")))?;
    }
    if !replayed.draws.is_empty() {
        let labels = feeds(&case.header, replayed.draws.len());
        let mut listing = Vec::new();
        for (d, label) in replayed.draws.iter().zip(labels) {
            let entry = draw_entry(d, label);
            draw_array(d)?.write_npy(&dir.join(format!("{}.npy", entry.file)))?;
            listing.push(entry);
        }
        let path = dir.join("draws.json");
        let text = serde_json::to_string_pretty(&listing).map_err(|e| Error::invalid("draws", "a listing serde_json can write", e))?;
        std::fs::write(&path, text + "\n").map_err(io(&path))?;
    }
    Ok(())
}
