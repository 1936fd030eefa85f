//! Fuzzes the `.npy` parsers `diffuse_spec::npy::parse_npy` (behind `golden::Array::parse_npy` and the weight
//! loaders) and `parse_npy_candidate` (what `verify` reads an implementation's outputs with).
//!
//! Properties: no panic, no allocation beyond the input's size (libFuzzer's
//! `-rss_limit_mb` / `-malloc_limit_mb` catch that), and on success the element count
//! equals the product of the shape, which fits in the payload exactly.
#![no_main]

#[allow(dead_code)]
#[path = "../../src/npy.rs"]
mod parse;

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    if let Ok((shape, elems)) = parse::parse_npy(data) {
        let n: usize = shape.iter().product();
        assert_eq!(n, elems.len(), "element count differs from the shape");
        assert!(4 * n <= data.len(), "more elements than the payload holds");
    }
    if let Ok((shape, elems, _)) = parse::parse_npy_candidate(data) {
        let n: usize = shape.iter().product();
        assert_eq!(n, elems.len(), "element count differs from the shape");
        assert!(4 * n <= data.len(), "more elements than the payload holds");
    }
});
