//! `diffuse-spec`: replay golden cases and print the conformance table.
//!
//! ```text
//! diffuse-spec check [DIR...] [--device cpu|cuda|cuda:N] [--filter SUBSTRING] [--json] [--threads N]
//!                    [--jvp double_backward|forward_ad] [--dump DIR]
//! diffuse-spec verify --golden DIR --candidate DIR [--filter SUBSTRING] [--json]
//! diffuse-spec manifest DIR
//! ```
//! `check` first verifies the files of each DIR against the nearest `MANIFEST.sha256`
//! (in DIR or a parent, up to the repository) when there is one.
//! Exit status: 0 when nothing failed, 1 when a case failed or errored, 2 on a usage error.

use std::path::PathBuf;
use std::process::ExitCode;

use diffuse_spec::golden::{self, ReplayOptions, Row, Summary};
use diffuse_spec::jvp::JvpBackend;

const USAGE: &str = "usage:
  diffuse-spec check [DIR...] [--device cpu|cuda|cuda:N] [--filter SUBSTRING] [--json] [--threads N]
                    [--jvp double_backward|forward_ad] [--dump DIR]
      replay every golden case under DIR (default: fixtures/) and print the conformance table;
      the files are first verified against the nearest MANIFEST.sha256 (DIR or a parent),
      when there is one; --dump writes the computed outputs as DIR/<case>/<stem>.npy
  diffuse-spec verify --golden DIR --candidate DIR [--filter SUBSTRING] [--json]
      compare another implementation's outputs (same file names, one directory per case
      under the candidate DIR) with the golden cases under the golden DIR
  diffuse-spec manifest DIR
      (re)write DIR/MANIFEST.sha256, the SHA-256 of every file below DIR (sha256sum format)";

struct Opts {
    dirs: Vec<PathBuf>,
    device: String,
    filter: Option<String>,
    json: bool,
    threads: Option<i32>,
    jvp: Option<JvpBackend>,
    golden: Option<PathBuf>,
    candidate: Option<PathBuf>,
    dump: Option<PathBuf>,
}

fn parse(args: &[String]) -> Result<Opts, String> {
    let mut o = Opts { dirs: vec![], device: "cpu".into(), filter: None, json: false, threads: None, jvp: None, golden: None, candidate: None, dump: None };
    let mut it = args.iter();
    while let Some(a) = it.next() {
        let mut value = |name: &str| it.next().cloned().ok_or_else(|| format!("{name} needs a value"));
        match a.as_str() {
            "--json" => o.json = true,
            "--device" => o.device = value("--device")?,
            "--filter" => o.filter = Some(value("--filter")?),
            "--threads" => {
                let v = value("--threads")?;
                o.threads = Some(v.parse().ok().filter(|n: &i32| *n > 0).ok_or_else(|| format!("--threads wants a positive integer, got `{v}`"))?);
            }
            "--jvp" => {
                let v = value("--jvp")?;
                o.jvp = Some(match v.as_str() {
                    "double_backward" => JvpBackend::DoubleBackward,
                    "forward_ad" => JvpBackend::ForwardAd,
                    _ => return Err(format!("--jvp wants double_backward or forward_ad, got `{v}`")),
                });
            }
            "--golden" => o.golden = Some(PathBuf::from(value("--golden")?)),
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

fn selected(name: &str, filter: &Option<String>) -> bool {
    filter.as_ref().is_none_or(|f| name.contains(f.as_str()))
}

fn run(cmd: &str, o: Opts) -> Result<Summary, String> {
    if let Some(n) = o.threads {
        tch::set_num_threads(n);
    }
    match cmd {
        "check" => {
            if o.golden.is_some() || o.candidate.is_some() {
                return Err("--golden / --candidate belong to `verify`".into());
            }
            let device = golden::parse_device(&o.device).map_err(|e| e.to_string())?;
            let opts = ReplayOptions { device, jvp: o.jvp };
            let dirs = if o.dirs.is_empty() { vec![PathBuf::from("fixtures")] } else { o.dirs };
            let mut rows = Vec::new();
            for d in &dirs {
                let cases = golden::discover(d).map_err(|e| e.to_string())?;
                if cases.is_empty() {
                    return Err(format!("no case (a directory with case.json) under {}", d.display()));
                }
                if let Some(m) = golden::find_manifest(d) {
                    let bad = golden::verify_manifest(&m, d);
                    eprintln!("manifest {}: {}", m.display(), if bad.is_empty() { "every file of this directory verified".to_string() } else { format!("{} problem(s)", bad.len()) });
                    rows.extend(bad);
                }
                for c in cases {
                    let name = c.file_name().map(|s| s.to_string_lossy().into_owned()).unwrap_or_default();
                    if selected(&name, &o.filter) {
                        rows.extend(golden::check_case_dumping(&c, &opts, o.dump.as_deref()));
                    }
                }
            }
            Ok(emit(&rows, o.json))
        }
        "verify" => {
            let (Some(g), Some(c)) = (o.golden, o.candidate) else {
                return Err("verify needs --golden DIR and --candidate DIR".into());
            };
            if !o.dirs.is_empty() || o.dump.is_some() {
                return Err("verify takes no positional directories and no --dump".into());
            }
            let mut rows = Vec::new();
            for case in golden::discover(&g).map_err(|e| e.to_string())? {
                let name = case.file_name().map(|s| s.to_string_lossy().into_owned()).unwrap_or_default();
                if selected(&name, &o.filter) {
                    rows.extend(golden::verify_case(&case, &c));
                }
            }
            Ok(emit(&rows, o.json))
        }
        "manifest" => {
            let [dir] = &o.dirs[..] else {
                return Err("manifest needs exactly one DIR".into());
            };
            if o.golden.is_some() || o.candidate.is_some() || o.dump.is_some() || o.json || o.filter.is_some() {
                return Err("manifest takes only a DIR".into());
            }
            let n = golden::write_manifest(dir).map_err(|e| e.to_string())?;
            println!("wrote {} ({n} files)", dir.join(golden::MANIFEST_NAME).display());
            Ok(Summary::default())
        }
        other => Err(format!("unknown command `{other}`")),
    }
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
    match run(cmd, opts) {
        Ok(s) if s.failed == 0 => ExitCode::SUCCESS,
        Ok(_) => ExitCode::from(1),
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::from(2)
        }
    }
}
