//! With the `torch` feature (the default):
//! 1. Bakes an rpath to libtorch into every binary of this package (library tests,
//!    integration tests, benches, examples and the CLI), so that none of them needs
//!    `LD_LIBRARY_PATH`. torch-sys reports the directory it linked against as
//!    `DEP_TCH_LIBTORCH_LIB` (its `links = "tch"` metadata).
//! 2. Compiles `csrc/dual_level.cpp`, the shim that enters and leaves a forward-mode
//!    AD level (used by the `ForwardAd` JVP backend), and `csrc/autocast.cpp`, which sets
//!    the dtype of CUDA autocast (used by `precision::autocast_bf16`).
//!
//! Without it (`--no-default-features`: the libtorch-free `verify` / `manifest` build)
//! there is nothing to link and nothing to compile.
fn main() {
    println!("cargo:rerun-if-env-changed=DEP_TCH_LIBTORCH_LIB");
    println!("cargo:rerun-if-changed=csrc/dual_level.cpp");
    println!("cargo:rerun-if-changed=csrc/autocast.cpp");
    if std::env::var_os("CARGO_FEATURE_TORCH").is_none() {
        return;
    }
    if let Ok(dir) = std::env::var("DEP_TCH_LIBTORCH_LIB") {
        println!("cargo:rustc-link-arg=-Wl,-rpath,{dir}");
        println!("cargo:rustc-env=DIFFUSE_SPEC_LIBTORCH_LIB={dir}");
    }
    cc::Build::new().cpp(true).pic(true).file("csrc/dual_level.cpp").file("csrc/autocast.cpp").compile("dspec_dual_level");
}
