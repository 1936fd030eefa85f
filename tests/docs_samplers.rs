//! The README shows code that compiles: every ```rust block in it must appear verbatim
//! in `examples/samplers.rs`, `examples/quickstart.rs` or `examples/own_network.rs` (which
//! `cargo test` builds).

#[test]
fn every_snippet_of_docs_samplers_md_is_in_the_example() {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
    let doc = std::fs::read_to_string(root.join("README.md")).expect("README.md");
    let example = std::fs::read_to_string(root.join("examples/samplers.rs")).expect("examples/samplers.rs")
        + &std::fs::read_to_string(root.join("examples/quickstart.rs")).expect("examples/quickstart.rs")
        + &std::fs::read_to_string(root.join("examples/own_network.rs")).expect("examples/own_network.rs");
    let mut n = 0;
    for (i, block) in doc.split("```rust\n").skip(1).enumerate() {
        let code = block.split("```").next().unwrap_or_default();
        assert!(example.contains(code), "snippet {i} of the README is not in examples/samplers.rs, quickstart.rs or own_network.rs:\n{code}");
        n += 1;
    }
    assert!(n >= 4, "expected a snippet per sampler, found {n}");
}
