//! Named random streams with `flax.nnx.Rngs` (flax 0.10.2) semantics.
//!
//! `nnx.Rngs(default_seed, name=seed, ...)` holds one `RngStream` per name:
//! a key (`jax.random.key(seed)` for an integer seed, used directly, not
//! split) and a uint32 counter starting at 0. Calling a stream returns
//! `jax.random.fold_in(key, counter)` and then increments the counter.
//! `rngs()` calls the stream named `default`. Asking for a name that is not
//! present falls back to the `default` stream itself (the same key *and the
//! same counter*: `rngs.dropout()` advances `default`'s count); with no
//! `default` stream it is an error. Mirrors `RngStream.__call__`,
//! `Rngs.__init__` and `Rngs._get_stream` in `flax/nnx/rnglib.py`.

use std::fmt;

use super::key::Key;

/// Name of the stream used by [`Rngs::next_default`] and as the fallback for
/// unknown names (`'default'` in `flax/nnx/rnglib.py`).
const DEFAULT_STREAM: &str = "default";

/// Errors of [`Rngs`].
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum RngError {
    /// No stream of this name and no `default` stream to fall back to
    /// (nnx raises `AttributeError` / `KeyError`: "No RNG named ... or
    /// 'default' found in Rngs.").
    UnknownStream {
        /// The name that was asked for.
        name: String,
    },
    /// The same stream name was given twice when building an [`Rngs`].
    DuplicateStream {
        /// The repeated name.
        name: String,
    },
}

impl fmt::Display for RngError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            RngError::UnknownStream { name } => {
                write!(
                    f,
                    "no RNG stream named {name:?} or \"default\" found in Rngs"
                )
            }
            RngError::DuplicateStream { name } => {
                write!(f, "RNG stream {name:?} given more than once")
            }
        }
    }
}

impl std::error::Error for RngError {}

/// One named stream: its base key and how many keys it has handed out.
#[derive(Debug)]
pub(super) struct RngStream {
    pub(super) name: String,
    key: Key,
    count: u32,
}

/// A set of named random streams, as `flax.nnx.Rngs`.
///
/// Each stream is a base [`Key`] and a counter `c` (uint32, starting at 0);
/// drawing from it returns `key.fold_in(c)` and sets `c = c + 1` (wrapping
/// modulo 2^32 like the reference's uint32 counter, after which keys repeat).
/// Streams keep the order in which they were given.
///
/// Deliberately neither `Clone` nor `Default`: copying a stream set by
/// accident would replay its draws. [`Rngs::fork`] makes such a copy on
/// purpose.
#[derive(Debug)]
pub struct Rngs {
    pub(super) streams: Vec<RngStream>,
    /// The draws recorded since [`Rngs::start_recording`] (`None`: not recording).
    pub(super) recorded: Option<Vec<super::record::Draw>>,
}

impl Rngs {
    /// `nnx.Rngs(**{name: seed, ...})`: one stream per `(name, seed)`, its key
    /// `jax.random.key(seed)` ([`Key::from_seed`], so seeds are taken modulo
    /// 2^32) and its counter 0. Include `("default", seed)` for the stream
    /// that `nnx.Rngs(seed)` creates and that unknown names fall back to.
    ///
    /// Errors with [`RngError::DuplicateStream`] if a name repeats.
    pub fn new(seeds: &[(&str, i64)]) -> Result<Rngs, RngError> {
        let keys: Vec<(&str, Key)> = seeds
            .iter()
            .map(|&(name, seed)| (name, Key::from_seed(seed)))
            .collect();
        Rngs::from_keys(&keys)
    }

    /// `nnx.Rngs(seed)`: a single `default` stream with key
    /// `jax.random.key(seed)`. Every name then draws from it.
    ///
    /// A stream's key depends on its seed only, not on its name (as in nnx): the `k`-th draw
    /// of `Rngs::with_default(s)` equals the `k`-th draw of any stream seeded `s`, e.g. of
    /// `Rngs::new(&[("noise", s)])`. A sampler seeded like the noise it starts from re-draws
    /// that noise; give independent uses distinct seeds.
    pub fn with_default(seed: i64) -> Rngs {
        Rngs {
            streams: vec![RngStream {
                name: DEFAULT_STREAM.to_string(),
                key: Key::from_seed(seed),
                count: 0,
            }],
            recorded: None,
        }
    }

    /// Streams from ready keys, as `nnx.Rngs(name=key)` with a key array or
    /// raw uint32 key data (`jax.random.wrap_key_data`); counters start at 0.
    ///
    /// Errors with [`RngError::DuplicateStream`] if a name repeats.
    pub fn from_keys(keys: &[(&str, Key)]) -> Result<Rngs, RngError> {
        let mut streams: Vec<RngStream> = Vec::with_capacity(keys.len());
        for &(name, key) in keys {
            if streams.iter().any(|s| s.name == name) {
                return Err(RngError::DuplicateStream {
                    name: name.to_string(),
                });
            }
            streams.push(RngStream {
                name: name.to_string(),
                key,
                count: 0,
            });
        }
        Ok(Rngs { streams, recorded: None })
    }

    /// Index of the stream that `name` resolves to: itself, else `default`.
    fn resolve(&self, name: &str) -> Result<usize, RngError> {
        self.streams
            .iter()
            .position(|s| s.name == name)
            .or_else(|| self.streams.iter().position(|s| s.name == DEFAULT_STREAM))
            .ok_or_else(|| RngError::UnknownStream {
                name: name.to_string(),
            })
    }

    /// `rngs.<name>()` / `rngs[name]()`: returns `fold_in(key, count)` of the
    /// stream `name` and increments its count. An unknown name uses (and
    /// advances) the `default` stream; with no `default` it is
    /// [`RngError::UnknownStream`] and nothing changes.
    pub fn stream(&mut self, name: &str) -> Result<Key, RngError> {
        self.stream_at(name).map(|(key, _, _)| key)
    }

    /// [`Rngs::stream`], also returning the index of the stream that answered and the
    /// count that was folded in (what a recorded draw names).
    pub(super) fn stream_at(&mut self, name: &str) -> Result<(Key, usize, u32), RngError> {
        let i = self.resolve(name)?;
        let s = &mut self.streams[i];
        let count = s.count;
        let key = s.key.fold_in(count);
        s.count = s.count.wrapping_add(1);
        Ok((key, i, count))
    }

    /// `rngs()`: the next key of the `default` stream
    /// ([`RngError::UnknownStream`] if there is none).
    pub fn next_default(&mut self) -> Result<Key, RngError> {
        self.stream(DEFAULT_STREAM)
    }

    /// How many keys the stream that `name` resolves to has handed out
    /// (`rngs.<name>.count.value`): the count that its next draw folds in.
    /// Unknown names resolve to `default`, as in [`Rngs::stream`].
    pub fn counter(&self, name: &str) -> Result<u32, RngError> {
        Ok(self.streams[self.resolve(name)?].count)
    }

    /// The base key of the stream that `name` resolves to
    /// (`rngs.<name>.key.value`), before any `fold_in`.
    pub fn base_key(&self, name: &str) -> Result<Key, RngError> {
        Ok(self.streams[self.resolve(name)?].key)
    }

    /// Whether a stream of exactly this name exists (`name in rngs`; no
    /// fallback to `default`).
    pub fn contains(&self, name: &str) -> bool {
        self.streams.iter().any(|s| s.name == name)
    }

    /// The stream names, in the order they were given.
    pub fn names(&self) -> Vec<&str> {
        self.streams.iter().map(|s| s.name.as_str()).collect()
    }

    /// A snapshot copy: the same streams with the same keys and counters.
    ///
    /// The copy and `self` then evolve independently, so drawing the same
    /// sequence from both replays the same keys. This is not nnx's
    /// `split_rngs` / `fork` (which split keys); it is a plain state copy.
    /// The copy does not record (see [`Rngs::start_recording`]): a computation that replays
    /// draws on a fork (MeanFlow's forward-mode JVP) consumes them once, on `self`.
    pub fn fork(&self) -> Rngs {
        Rngs {
            streams: self
                .streams
                .iter()
                .map(|s| RngStream {
                    name: s.name.clone(),
                    key: s.key,
                    count: s.count,
                })
                .collect(),
            recorded: None,
        }
    }
}

#[cfg(test)]
mod tests {
    //! Known answers computed with jax 0.5.1 / flax 0.10.2 on CPU; each block
    //! names the one-liner (`python -c "<one-liner>"`) that printed them.
    use super::*;

    #[test]
    fn streams_fold_in_counter_and_fall_back_to_default() {
        // from flax import nnx; import jax; r = nnx.Rngs(5, time=0, noise=42); print([jax.random.key_data(k).tolist() for k in [r.time(), r.noise(), r.time(), r.dropout(), r(), r.default()]], int(r.time.count.value), int(r.default.count.value))
        // -> [[1797259609, 2579123966], [1832780943, 270669613], [928981903, 3453687069],
        //     [2724472204, 3573582090], [202567368, 3886822060], [3594430910, 1784718894]] 2 3
        let mut r = Rngs::new(&[("default", 5), ("time", 0), ("noise", 42)]).unwrap();
        assert_eq!(r.stream("time").unwrap().data(), [1797259609, 2579123966]);
        assert_eq!(r.stream("noise").unwrap().data(), [1832780943, 270669613]);
        assert_eq!(r.stream("time").unwrap().data(), [928981903, 3453687069]);
        // Unknown name: the default stream, count 0.
        assert_eq!(
            r.stream("dropout").unwrap().data(),
            [2724472204, 3573582090]
        );
        assert_eq!(r.next_default().unwrap().data(), [202567368, 3886822060]);
        assert_eq!(
            r.stream("default").unwrap().data(),
            [3594430910, 1784718894]
        );
        assert_eq!(r.counter("time").unwrap(), 2);
        assert_eq!(r.counter("default").unwrap(), 3);
        assert_eq!(r.counter("dropout").unwrap(), 3);
        assert_eq!(r.base_key("noise").unwrap(), Key::from_seed(42));
        assert!(r.contains("noise") && !r.contains("dropout"));
        assert_eq!(r.names(), vec!["default", "time", "noise"]);
    }

    #[test]
    fn draws_from_streams() {
        // from flax import nnx; import jax, numpy as np; r = nnx.Rngs(time=0, noise=42); print(np.asarray(jax.random.normal(r.noise(), (2, 2))).ravel().view(np.uint32).tolist(), np.asarray(jax.random.uniform(r.time(), (3,))).view(np.uint32).tolist())
        // -> [1033600729, 3203989991, 1067788602, 1057293641] [1062707686, 1044038008, 1047044448]
        let mut r = Rngs::new(&[("time", 0), ("noise", 42)]).unwrap();
        let n: Vec<u32> = r
            .stream("noise")
            .unwrap()
            .normal(4)
            .iter()
            .map(|x| x.to_bits())
            .collect();
        assert_eq!(n, [1033600729, 3203989991, 1067788602, 1057293641]);
        let u: Vec<u32> = r
            .stream("time")
            .unwrap()
            .uniform(3, 0.0, 1.0)
            .iter()
            .map(|x| x.to_bits())
            .collect();
        assert_eq!(u, [1062707686, 1044038008, 1047044448]);
    }

    #[test]
    fn missing_stream_without_default_is_an_error() {
        // nnx raises AttributeError: No RNG named 'dropout' or 'default' found in Rngs.
        let mut r = Rngs::new(&[("time", 0)]).unwrap();
        let e = r.stream("dropout").unwrap_err();
        assert_eq!(
            e,
            RngError::UnknownStream {
                name: "dropout".into()
            }
        );
        assert!(e.to_string().contains("dropout"));
        assert!(r.next_default().is_err());
        assert!(r.counter("dropout").is_err());
        assert_eq!(r.counter("time").unwrap(), 0);
        let dup = Rngs::new(&[("a", 1), ("a", 2)]).unwrap_err();
        assert_eq!(dup, RngError::DuplicateStream { name: "a".into() });
        let _: &dyn std::error::Error = &dup;
    }

    #[test]
    fn with_default_and_from_keys() {
        let mut a = Rngs::with_default(100);
        let mut b = Rngs::from_keys(&[("default", Key::from_seed(100))]).unwrap();
        // nnx docstring: rng1.dropout() == fold_in(key(100), 0).
        assert_eq!(a.stream("dropout").unwrap(), Key::from_seed(100).fold_in(0));
        assert_eq!(
            b.stream("anything").unwrap(),
            Key::from_seed(100).fold_in(0)
        );
        assert_eq!(a.next_default().unwrap(), Key::from_seed(100).fold_in(1));
    }

    #[test]
    fn a_stream_key_depends_on_the_seed_not_the_name() {
        // The pitfall documented at `with_default` (nnx behaves the same): equal seeds give
        // equal draws whatever the stream's name; distinct seeds do not.
        // (A draw is a function of the key a stream hands out, so equal keys are equal draws.)
        let noise = Rngs::new(&[("noise", 4)]).unwrap().stream("noise").unwrap();
        let again = Rngs::with_default(4).stream("default").unwrap();
        let other = Rngs::with_default(6).stream("default").unwrap();
        assert_eq!(noise, again, "same seed, other name: the same key");
        assert_ne!(noise, other, "another seed: another key");
    }

    #[test]
    fn fork_replays_the_same_draws() {
        let mut r = Rngs::new(&[("time", 0), ("noise", 1)]).unwrap();
        r.stream("time").unwrap();
        let mut f = r.fork();
        assert_eq!(f.counter("time").unwrap(), 1);
        let a: Vec<Key> = (0..3).map(|_| r.stream("time").unwrap()).collect();
        let b: Vec<Key> = (0..3).map(|_| f.stream("time").unwrap()).collect();
        assert_eq!(a, b);
        assert_eq!(r.counter("noise").unwrap(), f.counter("noise").unwrap());
    }

    #[test]
    fn counter_wraps_like_uint32() {
        let mut r = Rngs::new(&[("s", 3)]).unwrap();
        r.streams[0].count = u32::MAX;
        assert_eq!(r.stream("s").unwrap(), Key::from_seed(3).fold_in(u32::MAX));
        assert_eq!(r.counter("s").unwrap(), 0);
    }
}
