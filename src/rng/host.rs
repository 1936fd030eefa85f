//! Bulk draws on the host: which instruction set computes them ([`HostPath`]) and on how
//! many threads ([`DrawThreads`]).
//!
//! Every element of a partitionable draw is a pure function of its flat index, and every
//! pair of a legacy draw a pure function of its position, so a draw can be cut into chunks
//! and computed on any number of threads, by any path, with the same bits. The paths:
//!
//! * [`HostPath::Avx2Fma`] (x86-64 with AVX2 and FMA, detected at run time): Threefry on
//!   eight counters per vector, two vectors interleaved, and the float32 maps in eight
//!   lanes (`avx2.rs`), every lane bit-identical to the scalar map.
//! * [`HostPath::ScalarFma`] (x86-64 with FMA): the scalar code of `threefry.rs` and
//!   `dist.rs` compiled with the `fma` target feature, so [`f32::mul_add`] is one
//!   instruction.
//! * [`HostPath::Portable`]: the same scalar code with no target feature (on x86-64
//!   without FMA `f32::mul_add` calls libm's correctly rounded `fmaf`). Every target.
//!
//! AVX-512 and NEON lanes are not written: no machine this crate is developed on has
//! them, and a path that was never executed would be untested code (`Auto` uses AVX2 on
//! AVX-512 machines, the portable path on ARM).

use std::num::NonZeroUsize;
use std::sync::atomic::{AtomicU8, AtomicUsize, Ordering};

use super::dist::{normal_f32_from_bits, uniform_f32_from_parts};
use super::threefry::hash_index;
use crate::error::{Error, Result};

/// The instruction set a bulk draw runs on. Every path gives the same bits.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub enum HostPath {
    /// The fastest available: [`HostPath::Avx2Fma`], else [`HostPath::ScalarFma`], else
    /// [`HostPath::Portable`] (see [`HostPath::detected`]).
    #[default]
    Auto,
    /// x86-64 AVX2 + FMA vectors (eight lanes).
    Avx2Fma,
    /// x86-64 scalar code with hardware FMA.
    ScalarFma,
    /// Scalar code without target features; available everywhere.
    Portable,
}

impl HostPath {
    /// Every concrete path (not `Auto`), fastest first.
    pub const ALL: [HostPath; 3] = [HostPath::Avx2Fma, HostPath::ScalarFma, HostPath::Portable];

    /// Whether this CPU can run the path (`Auto` and `Portable` always can).
    pub fn is_available(self) -> bool {
        match self {
            HostPath::Auto | HostPath::Portable => true,
            #[cfg(target_arch = "x86_64")]
            HostPath::Avx2Fma => std::is_x86_feature_detected!("avx2") && std::is_x86_feature_detected!("fma"),
            #[cfg(target_arch = "x86_64")]
            HostPath::ScalarFma => std::is_x86_feature_detected!("fma"),
            #[cfg(not(target_arch = "x86_64"))]
            HostPath::Avx2Fma | HostPath::ScalarFma => false,
        }
    }

    /// The concrete path `Auto` resolves to on this CPU.
    pub fn detected() -> HostPath {
        HostPath::ALL.into_iter().find(|p| p.is_available()).unwrap_or(HostPath::Portable)
    }

    /// A short name (`avx2_fma`, `scalar_fma`, `portable`, `auto`).
    pub fn name(self) -> &'static str {
        match self {
            HostPath::Auto => "auto",
            HostPath::Avx2Fma => "avx2_fma",
            HostPath::ScalarFma => "scalar_fma",
            HostPath::Portable => "portable",
        }
    }

    /// The concrete path to run: `Auto` detected, a forced path checked.
    fn resolve(self) -> Result<HostPath> {
        match self {
            HostPath::Auto => Ok(match host_path() {
                HostPath::Auto => HostPath::detected(),
                // Checked available when it was set.
                p => p,
            }),
            p if p.is_available() => Ok(p),
            p => Err(Error::Unsupported { what: format!("host path `{}`", p.name()), why: "this CPU lacks its instruction set".into() }),
        }
    }
}

/// How many threads a bulk draw may use.
///
/// Draws smaller than [`MIN_PER_THREAD`] elements per thread stay on the calling thread
/// (10^4 draws are always single-threaded; 10^6 use up to 15 threads). A large draw runs
/// its chunks on scoped threads that end before it returns; the calling thread computes
/// one chunk itself.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub enum DrawThreads {
    /// `min(available_parallelism, tch::get_num_threads())`, read at each large draw. A
    /// draw runs between libtorch ops, on the caller's thread, while libtorch's intra-op
    /// pool is idle: using as many threads as libtorch was granted takes no core the
    /// caller did not already give to its tensor ops, and `tch::set_num_threads(1)` (the
    /// CLI's `--threads 1`) makes draws single-threaded too. This is the default.
    #[default]
    FollowTorch,
    /// At most this many threads (`1`: always the calling thread), whatever libtorch uses.
    /// For a program that runs several training loops on threads of its own.
    Fixed(NonZeroUsize),
}

impl DrawThreads {
    /// Exactly one thread: the calling one.
    pub const ONE: DrawThreads = DrawThreads::Fixed(NonZeroUsize::MIN);

    /// The thread budget this setting gives now (at least 1).
    pub fn resolve(self) -> usize {
        match self {
            DrawThreads::Fixed(n) => n.get(),
            DrawThreads::FollowTorch => {
                let cores = std::thread::available_parallelism().map_or(1, NonZeroUsize::get);
                // Without libtorch (the `verify`-only build) there is no torch budget to follow.
                #[cfg(feature = "torch")]
                let cores = cores.min(usize::try_from(tch::get_num_threads()).unwrap_or(1).max(1));
                cores
            }
        }
    }
}

/// Elements per thread below which a draw does not add a thread (about 0.1 ms of work on
/// the AVX2 path, against some 20 - 50 us to start and join a thread).
pub const MIN_PER_THREAD: usize = 1 << 16;

/// The process-wide [`DrawThreads`] (`0` = `FollowTorch`, `n` = `Fixed(n)`).
static DRAW_THREADS: AtomicUsize = AtomicUsize::new(0);

/// Sets the thread budget of every later draw that does not name its own
/// ([`DrawOptions::threads`] `None`): [`Key::normal`](super::Key::normal) and the other
/// `Key` draws, the `*_tensor` draws and [`Rngs`](super::Rngs). Process-wide, like
/// `tch::set_num_threads`, and read at each draw; it changes the time a draw takes, never
/// its values.
pub fn set_draw_threads(threads: DrawThreads) {
    let v = match threads {
        DrawThreads::FollowTorch => 0,
        DrawThreads::Fixed(n) => n.get(),
    };
    DRAW_THREADS.store(v, Ordering::Relaxed);
}

/// The process-wide thread budget set by [`set_draw_threads`] (default `FollowTorch`).
pub fn draw_threads() -> DrawThreads {
    match NonZeroUsize::new(DRAW_THREADS.load(Ordering::Relaxed)) {
        None => DrawThreads::FollowTorch,
        Some(n) => DrawThreads::Fixed(n),
    }
}

/// The process-wide [`HostPath`] (index into `[Auto, Avx2Fma, ScalarFma, Portable]`).
static HOST_PATH: AtomicU8 = AtomicU8::new(0);

/// Sets the instruction set of every later draw that does not name its own
/// ([`DrawOptions::path`] `Auto`). Process-wide and read at each draw; it changes the
/// time a draw takes, never its values. A path this CPU lacks is
/// [`Error::Unsupported`] (and changes nothing).
pub fn set_host_path(path: HostPath) -> Result<()> {
    path.resolve()?;
    let v = match path {
        HostPath::Auto => 0,
        HostPath::Avx2Fma => 1,
        HostPath::ScalarFma => 2,
        HostPath::Portable => 3,
    };
    HOST_PATH.store(v, Ordering::Relaxed);
    Ok(())
}

/// The process-wide path set by [`set_host_path`] (default `Auto`).
pub fn host_path() -> HostPath {
    match HOST_PATH.load(Ordering::Relaxed) {
        1 => HostPath::Avx2Fma,
        2 => HostPath::ScalarFma,
        3 => HostPath::Portable,
        _ => HostPath::Auto,
    }
}

/// Explicit per-draw settings for the `fill_*` draws of [`Key`](super::Key).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct DrawOptions {
    /// The instruction set (default `Auto`: the process-wide [`host_path`], itself `Auto`
    /// = [`HostPath::detected`] unless set). A forced path the CPU lacks is an error.
    pub path: HostPath,
    /// The thread budget (`None`, the default: the process-wide [`draw_threads`]).
    pub threads: Option<DrawThreads>,
}

impl DrawOptions {
    /// The options with `path` forced.
    pub fn with_path(path: HostPath) -> DrawOptions {
        DrawOptions { path, ..DrawOptions::default() }
    }

    /// The options with `threads` set.
    pub fn with_threads(self, threads: DrawThreads) -> DrawOptions {
        DrawOptions { threads: Some(threads), ..self }
    }

    /// The concrete path and the thread budget.
    pub(super) fn resolve(&self) -> Result<Plan> {
        Ok(Plan { path: self.path.resolve()?, threads: self.threads.unwrap_or_else(draw_threads) })
    }
}

/// A resolved [`DrawOptions`].
#[derive(Clone, Copy, Debug)]
pub(super) struct Plan {
    path: HostPath,
    threads: DrawThreads,
}

impl Plan {
    /// The default plan (the process-wide path and threads); cannot fail.
    pub(super) fn auto() -> Plan {
        let path = match host_path() {
            HostPath::Auto => HostPath::detected(),
            p => p,
        };
        Plan { path, threads: draw_threads() }
    }

    /// Threads for `n` elements: 1 below `2 * MIN_PER_THREAD`, else the budget capped so
    /// that each thread has at least `MIN_PER_THREAD`.
    fn threads_for(&self, n: usize) -> usize {
        let most = n / MIN_PER_THREAD;
        if most < 2 {
            return 1;
        }
        self.threads.resolve().min(most).max(1)
    }
}

/// What a draw writes for each 32-bit word of random bits (floats as their bit patterns).
#[derive(Clone, Copy, Debug)]
pub(super) enum Map {
    /// The bits themselves (`jax.random.bits`).
    Bits,
    /// `uniform_f32_from_parts(bits, lo, scale)` (`jax.random.uniform`).
    Uniform {
        /// `flush(minval)`.
        lo: f32,
        /// `flush(flush(maxval) - lo)`.
        scale: f32,
    },
    /// `normal_f32_from_bits` (`jax.random.normal`).
    Normal,
}

impl Map {
    /// The scalar map of one word.
    #[inline(always)]
    pub(super) fn scalar(self, bits: u32) -> u32 {
        match self {
            Map::Bits => bits,
            Map::Uniform { lo, scale } => uniform_f32_from_parts(bits, lo, scale).to_bits(),
            Map::Normal => normal_f32_from_bits(bits).to_bits(),
        }
    }
}

/// Partitionable elements `start..start + out.len()`, scalar.
#[inline(always)]
pub(super) fn fill_partitionable_scalar(key: [u32; 2], start: u64, out: &mut [u32], map: Map) {
    for (j, o) in out.iter_mut().enumerate() {
        let y = hash_index(key, start + j as u64);
        *o = map.scalar(y[0] ^ y[1]);
    }
}

/// Legacy pair positions `i0..i0 + first.len()` (pair `(i, h + i)`, or `(i, 0)` where
/// `second` has no word left: the padding of an odd count), scalar.
#[inline(always)]
pub(super) fn hash_iota_scalar(key: [u32; 2], h: u32, i0: u32, first: &mut [u32], second: &mut [u32]) {
    for (j, f) in first.iter_mut().enumerate() {
        let i = i0.wrapping_add(j as u32);
        let x1 = if j < second.len() { h.wrapping_add(i) } else { 0 };
        let y = super::threefry::threefry2x32(key, [i, x1]);
        *f = y[0];
        if let Some(s) = second.get_mut(j) {
            *s = y[1];
        }
    }
}

#[inline(always)]
fn map_scalar_in_place(words: &mut [u32], map: Map) {
    for w in words {
        *w = map.scalar(*w);
    }
}

/// The scalar kernels compiled with hardware FMA.
#[cfg(target_arch = "x86_64")]
mod fma {
    use super::Map;

    /// # Safety
    /// The CPU must support FMA.
    #[target_feature(enable = "fma")]
    pub(super) unsafe fn fill_partitionable(key: [u32; 2], start: u64, out: &mut [u32], map: Map) {
        super::fill_partitionable_scalar(key, start, out, map)
    }

    /// # Safety
    /// The CPU must support FMA.
    #[target_feature(enable = "fma")]
    pub(super) unsafe fn hash_iota(key: [u32; 2], h: u32, i0: u32, first: &mut [u32], second: &mut [u32]) {
        super::hash_iota_scalar(key, h, i0, first, second)
    }

    /// # Safety
    /// The CPU must support FMA.
    #[target_feature(enable = "fma")]
    pub(super) unsafe fn map_in_place(words: &mut [u32], map: Map) {
        super::map_scalar_in_place(words, map)
    }
}

// The three dispatchers below call a `#[target_feature]` kernel only for a path that
// `HostPath::resolve` / `HostPath::detected` returned, i.e. one whose features
// `is_available` found on this CPU; `Plan` values are only made by those two.

fn partitionable_chunk(path: HostPath, key: [u32; 2], start: u64, out: &mut [u32], map: Map) {
    match path {
        #[cfg(target_arch = "x86_64")]
        // SAFETY: the path was resolved as available: the CPU has AVX2 and FMA.
        HostPath::Avx2Fma => unsafe { super::avx2::fill_partitionable(key, start, out, map) },
        #[cfg(target_arch = "x86_64")]
        // SAFETY: the path was resolved as available: the CPU has FMA.
        HostPath::ScalarFma => unsafe { fma::fill_partitionable(key, start, out, map) },
        _ => fill_partitionable_scalar(key, start, out, map),
    }
}

fn legacy_chunk(path: HostPath, key: [u32; 2], h: u32, i0: u32, first: &mut [u32], second: &mut [u32]) {
    match path {
        #[cfg(target_arch = "x86_64")]
        // SAFETY: the path was resolved as available: the CPU has AVX2 and FMA.
        HostPath::Avx2Fma => unsafe { super::avx2::hash_iota_into(key, h, i0, first, second) },
        #[cfg(target_arch = "x86_64")]
        // SAFETY: the path was resolved as available: the CPU has FMA.
        HostPath::ScalarFma => unsafe { fma::hash_iota(key, h, i0, first, second) },
        _ => hash_iota_scalar(key, h, i0, first, second),
    }
}

fn map_chunk(path: HostPath, words: &mut [u32], map: Map) {
    match path {
        #[cfg(target_arch = "x86_64")]
        // SAFETY: the path was resolved as available: the CPU has AVX2 and FMA.
        HostPath::Avx2Fma => unsafe { super::avx2::map_bits_in_place(words, map) },
        #[cfg(target_arch = "x86_64")]
        // SAFETY: the path was resolved as available: the CPU has FMA.
        HostPath::ScalarFma => unsafe { fma::map_in_place(words, map) },
        _ => map_scalar_in_place(words, map),
    }
}

/// Runs `f` on every task, the first on the calling thread and the others on scoped
/// threads (joined before returning).
fn run_tasks<T: Send, F: Fn(T) + Sync>(tasks: Vec<T>, f: F) {
    let mut it = tasks.into_iter();
    let Some(first) = it.next() else { return };
    if it.len() == 0 {
        f(first);
        return;
    }
    std::thread::scope(|s| {
        let f = &f;
        for t in it {
            s.spawn(move || f(t));
        }
        f(first);
    });
}

/// Chunk length for `n` elements over `threads` threads, a multiple of 64 elements.
fn chunk_len(n: usize, threads: usize) -> usize {
    n.div_ceil(threads).next_multiple_of(64).max(64)
}

/// The partitionable draw of `out.len()` elements: element `i` is `map(y0 ^ y1)` for
/// `[y0, y1] = threefry2x32(key, [i >> 32, i])`.
pub(super) fn fill_partitionable(plan: Plan, key: [u32; 2], out: &mut [u32], map: Map) {
    let threads = plan.threads_for(out.len());
    if threads == 1 {
        return partitionable_chunk(plan.path, key, 0, out, map);
    }
    let per = chunk_len(out.len(), threads);
    let tasks: Vec<_> = out.chunks_mut(per).enumerate().map(|(c, chunk)| ((c * per) as u64, chunk)).collect();
    run_tasks(tasks, |(start, chunk)| partitionable_chunk(plan.path, key, start, chunk, map));
}

/// `threefry_2x32(key, iota(n))` into `out` (`n = out.len() < 2^32`), the legacy layout:
/// with `h = ceil(n/2)`, pair `i` is `(i, h + i)` (`(h - 1, 0)` last for odd `n`), its
/// first word at `out[i]`, its second at `out[h + i]`.
pub(super) fn hash_iota(plan: Plan, key: [u32; 2], out: &mut [u32]) {
    let n = out.len();
    debug_assert!(n as u64 <= u64::from(u32::MAX));
    let h = n.div_ceil(2);
    let (mut first, mut second) = out.split_at_mut(h);
    let threads = plan.threads_for(n);
    let per = if threads == 1 { h.max(1) } else { chunk_len(h, threads) };
    let mut tasks = Vec::new();
    let mut i0 = 0usize;
    while !first.is_empty() {
        let take = per.min(first.len());
        let (f, rest_f) = first.split_at_mut(take);
        let (s, rest_s) = second.split_at_mut(take.min(second.len()));
        tasks.push((i0 as u32, f, s));
        first = rest_f;
        second = rest_s;
        i0 += take;
    }
    run_tasks(tasks, |(i0, f, s)| legacy_chunk(plan.path, key, h as u32, i0, f, s));
}

/// Applies a float `map` in place to the words of `out`, chunked over threads.
pub(super) fn map_in_place(plan: Plan, out: &mut [u32], map: Map) {
    if matches!(map, Map::Bits) {
        return;
    }
    let threads = plan.threads_for(out.len());
    let per = if threads == 1 { out.len().max(1) } else { chunk_len(out.len(), threads) };
    run_tasks(out.chunks_mut(per).collect(), |chunk| map_chunk(plan.path, chunk, map));
}

/// `&mut [f32]` as the `&mut [u32]` of its bit patterns, for the maps to write into.
pub(super) fn as_words(v: &mut [f32]) -> &mut [u32] {
    // SAFETY: `f32` and `u32` have the same size and alignment and every bit pattern is
    // valid for both; the new slice covers exactly the same memory and borrows `v`
    // mutably for its whole lifetime, so nothing else can alias it.
    unsafe { std::slice::from_raw_parts_mut(v.as_mut_ptr().cast::<u32>(), v.len()) }
}


#[cfg(test)]
mod tests {
    //! Every path against the scalar definitions of `threefry.rs` / `dist.rs` (which the
    //! known-answer tests of `key.rs` and `dist.rs` pin to JAX), and the complete normal
    //! and uniform maps against JAX itself.
    use super::*;
    use crate::rng::dist::{uniform_f32_from_bits, NORMAL_UNIFORM_LO};
    use crate::rng::threefry::hash_counts;
    use sha2::{Digest, Sha256};

    /// The paths this CPU can run, each forced in turn. On x86-64 with AVX2 + FMA this is
    /// all three; the test says which it could not run.
    fn paths() -> Vec<HostPath> {
        let (ok, missing): (Vec<_>, Vec<_>) = HostPath::ALL.into_iter().partition(|p| p.is_available());
        if !missing.is_empty() {
            eprintln!("NOT RUN on this CPU: host paths {missing:?}");
        }
        ok
    }

    fn plan(path: HostPath, threads: usize) -> Plan {
        Plan { path, threads: DrawThreads::Fixed(NonZeroUsize::new(threads).unwrap()) }
    }

    /// Worst ulp distance between two float32 bit patterns (as ordered integers).
    fn ulp(a: u32, b: u32) -> u64 {
        let key = |x: u32| if x & 0x8000_0000 != 0 { -i64::from(x & 0x7fff_ffff) } else { i64::from(x) };
        key(a).abs_diff(key(b))
    }

    /// Asserts bit equality, printing the count, first mismatch and worst ulp otherwise.
    fn assert_same(what: &str, got: &[u32], want: &[u32]) {
        assert_eq!(got.len(), want.len(), "{what}: length");
        let bad: Vec<usize> = (0..got.len()).filter(|&i| got[i] != want[i]).collect();
        if let Some(&first) = bad.first() {
            let worst = bad.iter().map(|&i| ulp(got[i], want[i])).max().unwrap_or(0);
            panic!(
                "{what}: {} of {} differ; first at {first} ({:#010x} vs {:#010x}); worst {worst} ulp (as float32)",
                bad.len(),
                got.len(),
                got[first],
                want[first]
            );
        }
    }

    fn maps() -> Vec<(&'static str, Map)> {
        let u = |a, b| {
            let (lo, scale) = crate::rng::dist::uniform_bounds(a, b);
            Map::Uniform { lo, scale }
        };
        vec![
            ("bits", Map::Bits),
            ("normal", Map::Normal),
            ("uniform[0,1)", u(0.0, 1.0)),
            ("uniform[-2,3)", u(-2.0, 3.0)),
            ("uniform[0,2e-38)", u(0.0, 2e-38)),
            ("uniform[-1e-39,1e-39)", u(-1e-39, 1e-39)),
            ("uniform[-0,1)", u(-0.0, 1.0)),
            ("uniform[nan,1)", u(f32::NAN, 1.0)),
            ("uniform[-inf,inf)", u(f32::NEG_INFINITY, f32::INFINITY)),
            ("uniform[1e30,3e38)", u(1e30, 3e38)),
        ]
    }

    /// The scalar definition of a word's map, straight from `dist.rs`.
    fn reference_map(map: Map, bits: u32, bounds: (f32, f32)) -> u32 {
        match map {
            Map::Bits => bits,
            Map::Normal => normal_f32_from_bits(bits).to_bits(),
            Map::Uniform { .. } => uniform_f32_from_bits(bits, bounds.0, bounds.1).to_bits(),
        }
    }

    fn bounds_of(name: &str) -> (f32, f32) {
        match name {
            "uniform[0,1)" => (0.0, 1.0),
            "uniform[-2,3)" => (-2.0, 3.0),
            "uniform[0,2e-38)" => (0.0, 2e-38),
            "uniform[-1e-39,1e-39)" => (-1e-39, 1e-39),
            "uniform[-0,1)" => (-0.0, 1.0),
            "uniform[nan,1)" => (f32::NAN, 1.0),
            "uniform[-inf,inf)" => (f32::NEG_INFINITY, f32::INFINITY),
            "uniform[1e30,3e38)" => (1e30, 3e38),
            _ => (0.0, 0.0),
        }
    }

    /// Sizes around the vector width, the 16-element step, the 64-element chunk rounding
    /// and the threading threshold (with 3 threads: uneven chunks, a short last one).
    const SIZES: [usize; 12] = [0, 1, 7, 8, 15, 16, 17, 63, 65, 1001, 2 * MIN_PER_THREAD + 1, 3 * MIN_PER_THREAD + 37];

    #[test]
    fn partitionable_every_path_and_thread_count_matches_the_scalar_definition() {
        let key = [0x1234_5678, 0x9abc_def0];
        for path in paths() {
            for (name, map) in maps() {
                let b = bounds_of(name);
                for n in SIZES {
                    let want: Vec<u32> = (0..n as u64)
                        .map(|i| {
                            let y = hash_index(key, i);
                            reference_map(map, y[0] ^ y[1], b)
                        })
                        .collect();
                    for threads in [1, 2, 3] {
                        let mut got = vec![0u32; n];
                        fill_partitionable(plan(path, threads), key, &mut got, map);
                        assert_same(&format!("{path:?} {name} n={n} threads={threads}"), &got, &want);
                    }
                }
            }
        }
    }

    #[test]
    fn partitionable_counter_low_word_wrapping_inside_a_vector() {
        // Elements 2^32 - 21 .. 2^32 + 43: the high word of the counter changes inside a
        // vector step, which the AVX2 path hands to scalar lanes.
        let key = [7, 9];
        let start = (1u64 << 32) - 21;
        for path in paths() {
            for (name, map) in maps() {
                let b = bounds_of(name);
                let want: Vec<u32> = (0..64u64)
                    .map(|j| {
                        let y = hash_index(key, start + j);
                        reference_map(map, y[0] ^ y[1], b)
                    })
                    .collect();
                for skip in [0usize, 3, 5] {
                    let mut got = vec![0u32; 64 - skip];
                    partitionable_chunk(path, key, start + skip as u64, &mut got, map);
                    assert_same(&format!("{path:?} {name} skip={skip}"), &got, &want[skip..]);
                }
            }
        }
    }

    #[test]
    fn legacy_every_path_and_thread_count_matches_the_scalar_definition() {
        let key = [3, 0xdead_beef];
        for path in paths() {
            for n in SIZES {
                let count: Vec<u32> = (0..n as u32).collect();
                let want = hash_counts(key, &count);
                for threads in [1, 2, 3] {
                    let mut got = vec![0u32; n];
                    hash_iota(plan(path, threads), key, &mut got);
                    assert_same(&format!("{path:?} legacy n={n} threads={threads}"), &got, &want);
                    for (name, map) in maps() {
                        let b = bounds_of(name);
                        let mut mapped = got.clone();
                        map_in_place(plan(path, threads), &mut mapped, map);
                        let want_m: Vec<u32> = want.iter().map(|&w| reference_map(map, w, b)).collect();
                        assert_same(&format!("{path:?} legacy {name} n={n} threads={threads}"), &mapped, &want_m);
                    }
                }
            }
        }
    }

    /// All 2^23 inputs of a map: the word `m << 9` for every mantissa `m` (the low 9
    /// bits are dropped by `bits >> 9`, so this is every value the map can return).
    fn all_mantissas() -> Vec<u32> {
        (0..1u32 << 23).map(|m| m << 9).collect()
    }

    fn sha256_le(words: &[u32]) -> String {
        let mut h = Sha256::new();
        for w in words {
            h.update(w.to_le_bytes());
        }
        h.finalize().iter().map(|b| format!("{b:02x}")).collect()
    }

    /// The normal map on all 2^23 inputs, on every path, against the scalar map (per
    /// element, worst ulp on failure) and against JAX's own values: the SHA-256 of
    /// `jax.random.normal` over the same 2^23 words, printed by
    /// `python spec/scripts/rng_digest.py --maps` (jax 0.5.1 / jaxlib 0.5.1, CPU).
    #[test]
    fn normal_map_exhaustive_on_every_path() {
        let inputs = all_mantissas();
        let want: Vec<u32> = inputs.iter().map(|&b| normal_f32_from_bits(b).to_bits()).collect();
        // normal_map all 2^23 mantissas: sha256
        assert_eq!(sha256_le(&want), "bce75e166cbc415fbc73cdb268d4365a129d7704d72e60ddd3acbe5811e873c2", "scalar normal map vs JAX");
        for path in paths() {
            let mut got = inputs.clone();
            map_in_place(plan(path, 2), &mut got, Map::Normal);
            assert_same(&format!("{path:?} normal map, all 2^23 inputs"), &got, &want);
        }
        // Both ends of the map (words 0 and 0xffff_fe00) are finite; the uniform behind it
        // starts at nextafter(-1, 0).
        assert!(f32::from_bits(want[0]).is_finite() && f32::from_bits(want[want.len() - 1]).is_finite());
        assert_eq!(uniform_f32_from_bits(0, NORMAL_UNIFORM_LO, 1.0), NORMAL_UNIFORM_LO);
    }

    /// The uniform map on all 2^23 inputs for three ranges (the last one flushes
    /// subnormal results), every path, against the scalar map and JAX's SHA-256 of
    /// `jax.random.uniform(minval, maxval)` over the same words (`rng_digest.py --maps`).
    #[test]
    fn uniform_map_exhaustive_on_every_path() {
        let inputs = all_mantissas();
        let cases: [(f32, f32, &str); 3] = [
            // uniform_map minval=0.0 maxval=1.0 all 2^23 mantissas: sha256
            (0.0, 1.0, "8456c5d5c9f04eb141620925ff951d0f6b73b5729414c24b3fecca2081708cdc"),
            // uniform_map minval=-2.0 maxval=3.0 all 2^23 mantissas: sha256
            (-2.0, 3.0, "c35a9d58fcd2c08edfa24db86527dd0002749f276af5246477bff5da82a57d3b"),
            // uniform_map minval=0.0 maxval=2e-38 all 2^23 mantissas: sha256
            (0.0, 2e-38, "07423f95c9ecc3ad784fa0d0636de2a08e3036a6b64cc048e67ef5f28d79544a"),
        ];
        for (a, b, digest) in cases {
            let want: Vec<u32> = inputs.iter().map(|&w| uniform_f32_from_bits(w, a, b).to_bits()).collect();
            assert_eq!(sha256_le(&want), digest, "scalar uniform[{a}, {b}) map vs JAX");
            let (lo, scale) = crate::rng::dist::uniform_bounds(a, b);
            for path in paths() {
                let mut got = inputs.clone();
                map_in_place(plan(path, 2), &mut got, Map::Uniform { lo, scale });
                assert_same(&format!("{path:?} uniform[{a}, {b}) map, all 2^23 inputs"), &got, &want);
            }
        }
    }

    #[test]
    fn thread_budget_and_forced_paths() {
        // Small draws never add a thread, whatever the budget.
        let p = plan(HostPath::Portable, 8);
        assert_eq!(p.threads_for(10_000), 1);
        assert_eq!(p.threads_for(2 * MIN_PER_THREAD - 1), 1);
        assert_eq!(p.threads_for(2 * MIN_PER_THREAD), 2);
        assert_eq!(p.threads_for(100 * MIN_PER_THREAD), 8);
        assert_eq!(plan(HostPath::Portable, 1).threads_for(100 * MIN_PER_THREAD), 1);
        assert!(DrawThreads::FollowTorch.resolve() >= 1);
        assert_eq!(DrawThreads::ONE.resolve(), 1);
        // Auto is never an error; a forced path is one exactly when the CPU lacks it.
        assert!(DrawOptions::default().resolve().is_ok());
        for path in HostPath::ALL {
            assert_eq!(DrawOptions::with_path(path).resolve().is_ok(), path.is_available(), "{path:?}");
        }
        assert!(HostPath::Portable.is_available());
        assert!(HostPath::detected().is_available() && HostPath::detected() != HostPath::Auto);
    }
}
