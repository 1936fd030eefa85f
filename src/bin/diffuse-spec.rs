//! `diffuse-spec`: replay golden cases (`check`), compare another implementation's outputs
//! with them (`verify`), and write fixture manifests (`manifest`).
//!
//! ```text
//! diffuse-spec check [DIR...] [--device cpu|cuda|cuda:N] [--filter SUBSTRING]... [--cases FILE]
//!                    [--json] [--threads N] [--jvp auto|fused|double_backward|forward_ad] [--dump DIR]
//! diffuse-spec verify --golden DIR [--golden DIR]... --candidate DIR [--filter SUBSTRING]...
//!                     [--cases FILE] [--skip LIST]... [--json]
//! diffuse-spec manifest DIR
//! ```
//! Both `check` and `verify` first verify the files of each DIR against the nearest
//! `MANIFEST.sha256` (in DIR or a parent, up to the repository) when there is one.
//! Exit status: 0 when every selected case passed (or was skipped), 1 when a quantity failed,
//! 2 on a usage error (including a selection that matches no case), 3 when a case, file or
//! candidate could not be read or replayed. `verify` and `manifest` work in a build without
//! the `torch` feature (`cargo install --path . --no-default-features`); `check` needs it.

use std::path::PathBuf;
use std::process::ExitCode;

use diffuse_spec::golden::{self, Row, Selection, Skip, Summary};

const USAGE: &str = "usage:
  diffuse-spec check [DIR...] [--device cpu|cuda|cuda:N] [--filter SUBSTRING]... [--cases FILE]
                     [--json] [--threads N] [--jvp auto|fused|double_backward|forward_ad] [--dump DIR]
      replay every golden case under DIR (default: fixtures/) with the library and print the
      conformance table; --dump writes what the replay computed and drew, in the candidate
      layout of `verify` (DIR/<case>/<stem>.npy, draw.*.npy and draws.json)
  diffuse-spec verify --golden DIR [--golden DIR]... --candidate DIR [--filter SUBSTRING]...
                      [--cases FILE] [--skip LIST]... [--json]
      compare another implementation's outputs (one directory per case under the candidate
      DIR, with the golden file names out.*.npy / grad.*.npy) with the golden cases;
      --skip out.t,out.n | grad.blocks.* | grad  leaves quantities uncompared (`skipped`)
  diffuse-spec manifest DIR
      (re)write DIR/MANIFEST.sha256, the SHA-256 of every file below DIR (sha256sum format)

  --filter may be repeated (a case is selected when its name contains any); --cases FILE
  selects the names listed one per line. A selection that matches nothing is a usage error.
  Both commands verify each DIR against the nearest MANIFEST.sha256 first.
  exit status: 0 all passed, 1 a quantity failed, 2 usage error, 3 a file or case could not
  be read or replayed";

#[derive(Default)]
struct Opts {
    dirs: Vec<PathBuf>,
    device: Option<String>,
    selection: Selection,
    json: bool,
    threads: Option<i32>,
    jvp: Option<String>,
    golden: Vec<PathBuf>,
    candidate: Option<PathBuf>,
    dump: Option<PathBuf>,
    skip: Option<Skip>,
}

fn parse(args: &[String]) -> Result<Opts, String> {
    let mut o = Opts::default();
    let mut it = args.iter();
    while let Some(a) = it.next() {
        let mut value = |name: &str| it.next().cloned().ok_or_else(|| format!("{name} needs a value"));
        match a.as_str() {
            "--json" => o.json = true,
            "--device" => o.device = Some(value("--device")?),
            "--filter" => o.selection.filters.push(value("--filter")?),
            "--cases" => {
                let path = PathBuf::from(value("--cases")?);
                let names = Selection::read_names(&path).map_err(|e| format!("--cases: {e}"))?;
                o.selection.names.get_or_insert_with(Default::default).extend(names);
            }
            "--skip" => {
                let v = value("--skip")?;
                o.skip.get_or_insert_with(Skip::none).add(&v).map_err(|e| e.to_string())?;
            }
            "--threads" => {
                let v = value("--threads")?;
                o.threads = Some(v.parse().ok().filter(|n: &i32| *n > 0).ok_or_else(|| format!("--threads wants a positive integer, got `{v}`"))?);
            }
            "--jvp" => {
                let v = value("--jvp")?;
                if !matches!(v.as_str(), "auto" | "fused" | "double_backward" | "forward_ad") {
                    return Err(format!("--jvp wants auto, fused, double_backward or forward_ad, got `{v}`"));
                }
                o.jvp = Some(v);
            }
            "--golden" => o.golden.push(PathBuf::from(value("--golden")?)),
            "--candidate" => o.candidate = Some(PathBuf::from(value("--candidate")?)),
            "--dump" => o.dump = Some(PathBuf::from(value("--dump")?)),
            s if s.starts_with('-') => return Err(format!("unknown option `{s}`")),
            s => o.dirs.push(PathBuf::from(s)),
        }
    }
    Ok(o)
}

fn emit(rows: &[Row], json: bool) -> Summary {
    let summary = Summary::of(rows);
    if json {
        for r in rows {
            println!("{}", serde_json::to_string(r).unwrap_or_else(|e| format!("{{\"error\":\"{e}\"}}")));
        }
        println!("{}", serde_json::json!({ "summary": summary, "line": summary.line() }));
    } else {
        print!("{}", golden::table(rows));
        println!("{}", summary.line());
    }
    summary
}

/// Refuses options that belong to another command.
fn only(cmd: &str, o: &Opts, allowed: &[&str]) -> Result<(), String> {
    let given = [
        ("DIR", !o.dirs.is_empty()),
        ("--device", o.device.is_some()),
        ("--filter", !o.selection.filters.is_empty()),
        ("--cases", o.selection.names.is_some()),
        ("--json", o.json),
        ("--threads", o.threads.is_some()),
        ("--jvp", o.jvp.is_some()),
        ("--golden", !o.golden.is_empty()),
        ("--candidate", o.candidate.is_some()),
        ("--dump", o.dump.is_some()),
        ("--skip", o.skip.is_some()),
    ];
    match given.iter().find(|(name, on)| *on && !allowed.contains(name)) {
        Some((name, _)) => Err(format!("`{cmd}` takes no {name}")),
        None => Ok(()),
    }
}

fn nothing_selected(o: &Opts) -> Result<Summary, String> {
    let mut what = Vec::new();
    if !o.selection.filters.is_empty() {
        what.push(format!("--filter {}", o.selection.filters.join(" / ")));
    }
    if o.selection.names.is_some() {
        what.push("--cases".to_string());
    }
    Err(format!("no case matches {}", what.join(" or ")))
}

#[cfg(feature = "torch")]
fn check(o: Opts) -> Result<Summary, String> {
    use diffuse_spec::golden::ReplayOptions;
    use diffuse_spec::jvp::JvpBackend;
    only("check", &o, &["DIR", "--device", "--filter", "--cases", "--json", "--threads", "--jvp", "--dump"])?;
    if let Some(n) = o.threads {
        tch::set_num_threads(n);
    }
    let device = golden::parse_device(o.device.as_deref().unwrap_or("cpu")).map_err(|e| e.to_string())?;
    let jvp = o.jvp.as_deref().map(JvpBackend::from_name).transpose().map_err(|e| e.to_string())?;
    let opts = ReplayOptions { device, jvp };
    let dirs = if o.dirs.is_empty() { vec![PathBuf::from("fixtures")] } else { o.dirs.clone() };
    let cases = golden::selected_cases(&dirs, &o.selection).map_err(|e| e.to_string())?;
    if cases.is_empty() {
        return nothing_selected(&o);
    }
    let mut rows = Vec::new();
    for d in &dirs {
        if let Some(m) = golden::find_manifest(d) {
            let bad = golden::verify_manifest(&m, d);
            eprintln!("manifest {}: {}", m.display(), if bad.is_empty() { "every file of this directory verified".to_string() } else { format!("{} problem(s)", bad.len()) });
            rows.extend(bad);
        }
    }
    let all = golden::selected_cases(&dirs, &Selection::all()).map_err(|e| e.to_string())?;
    for c in &cases {
        rows.extend(golden::check_case_dumping(c, &opts, o.dump.as_deref()));
    }
    rows.extend(golden::unmatched_names(&all, &o.selection));
    Ok(emit(&rows, o.json))
}

#[cfg(not(feature = "torch"))]
fn check(_: Opts) -> Result<Summary, String> {
    Err("`check` replays cases with libtorch, and this diffuse-spec was built without the `torch` feature \
         (`cargo install --path .` builds it with); `verify` and `manifest` work in this build"
        .into())
}

fn verify(o: Opts) -> Result<Summary, String> {
    only("verify", &o, &["--golden", "--candidate", "--filter", "--cases", "--json", "--skip"])?;
    let Some(candidate) = o.candidate.clone() else {
        return Err("verify needs --golden DIR and --candidate DIR".into());
    };
    if o.golden.is_empty() {
        return Err("verify needs --golden DIR and --candidate DIR".into());
    }
    if !candidate.is_dir() {
        return Err(format!("--candidate {} is not a directory", candidate.display()));
    }
    let cases = golden::selected_cases(&o.golden, &o.selection).map_err(|e| e.to_string())?;
    if cases.is_empty() {
        return nothing_selected(&o);
    }
    let skip = o.skip.clone().unwrap_or_default();
    let rows = golden::verify_roots(&o.golden, &candidate, &o.selection, &skip).map_err(|e| e.to_string())?;
    Ok(emit(&rows, o.json))
}

fn manifest(o: Opts) -> Result<Summary, String> {
    only("manifest", &o, &["DIR"])?;
    let [dir] = &o.dirs[..] else {
        return Err("manifest needs exactly one DIR".into());
    };
    let n = golden::write_manifest(dir).map_err(|e| e.to_string())?;
    println!("wrote {} ({n} files)", dir.join(golden::MANIFEST_NAME).display());
    Ok(Summary::default())
}

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let Some(cmd) = args.first() else {
        eprintln!("{USAGE}");
        return ExitCode::from(2);
    };
    if cmd == "--help" || cmd == "-h" || cmd == "help" {
        println!("{USAGE}");
        return ExitCode::SUCCESS;
    }
    let opts = match parse(&args[1..]) {
        Ok(o) => o,
        Err(e) => {
            eprintln!("error: {e}\n{USAGE}");
            return ExitCode::from(2);
        }
    };
    let result = match cmd.as_str() {
        "check" => check(opts),
        "verify" => verify(opts),
        "manifest" => manifest(opts),
        other => Err(format!("unknown command `{other}`")),
    };
    match result {
        Ok(s) => ExitCode::from(s.exit_code()),
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::from(2)
        }
    }
}
