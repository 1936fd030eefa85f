//! Loading network weights by reference module path.
//!
//! A network's arrays are named by their path in the reference (Flax NNX) module tree,
//! joined with `.` (`blocks.0.attn.query.kernel`), and keep the reference layouts
//! (dense kernel `[in, out]`, conv kernel `[kh, kw, in, out]`, attention `query/key/value`
//! kernels `[hidden, heads, head_dim]`, `out` `[heads, head_dim, hidden]`). Two roles:
//! *parameters* (trainable) and *buffers* (fixed arrays such as the DiT's position table).
//!
//! Two on-disk forms are read:
//! - a directory of `.npy` files named `param.<path>.npy` / `buffer.<path>.npy` (the golden
//!   case naming; other files in the directory are ignored), see [`Weights::from_npy_dir`];
//! - one `.safetensors` file, see [`Weights::from_safetensors`].
//!
//! Checking names and shapes against what a network expects is [`check_names_and_shapes`],
//! which every network constructor calls: a missing, extra or mis-shaped array is an
//! [`Error::InvalidArgument`] naming its path.
//!
//! The `.npy` reader is strict: little-endian, C order, a plain dtype, and a payload of
//! exactly the declared size (neither truncated nor padded). The golden harness reads
//! its files through the same parser ([`crate::npy::parse_npy`]).

use std::collections::BTreeMap;
use std::path::Path;

use tch::{Device, Kind, Tensor};

use crate::error::{Error, Result};

/// Prefix of a parameter's file or key (`param.<path>`).
pub const PARAM_PREFIX: &str = "param.";
/// Prefix of a buffer's file or key (`buffer.<path>`).
pub const BUFFER_PREFIX: &str = "buffer.";

/// Reads a float32 `.npy` file (strictly, see [`crate::npy::parse_npy`]) into a tensor on `device`.
pub fn read_npy_f32(path: &Path, device: Device) -> Result<Tensor> {
    let bytes = std::fs::read(path).map_err(|source| Error::Io { path: path.to_path_buf(), source })?;
    let (shape, data) = crate::npy::parse_npy(&bytes).map_err(|e| Error::invalid(path.display().to_string(), "a float32 .npy file", e))?;
    let crate::npy::NpyData::F32(data) = data else {
        return Err(Error::invalid(path.display().to_string(), "a float32 (<f4) .npy file", "an int32 or uint32 file"));
    };
    let shape: Vec<i64> = shape.iter().map(|&d| d as i64).collect();
    Ok(Tensor::f_from_slice(&data)?.f_reshape(&shape)?.f_to_device(device)?)
}

/// A network's named arrays: trainable parameters and fixed buffers, keyed by reference path.
#[derive(Debug, Default)]
pub struct Weights {
    /// Trainable parameters by path (`x_proj.kernel`, ...).
    pub params: BTreeMap<String, Tensor>,
    /// Fixed buffers by path (`x_embedder.pe`, ...).
    pub buffers: BTreeMap<String, Tensor>,
}

impl Weights {
    /// Reads every `param.<path>.npy` and `buffer.<path>.npy` of directory `dir` (float32)
    /// onto `device`. Other files are ignored, so a golden case directory can be read too.
    pub fn from_npy_dir(dir: &Path, device: Device) -> Result<Weights> {
        let io = |p: &Path, source| Error::Io { path: p.to_path_buf(), source };
        let mut w = Weights::default();
        let mut entries: Vec<_> = std::fs::read_dir(dir).map_err(|e| io(dir, e))?.collect::<std::result::Result<_, _>>().map_err(|e| io(dir, e))?;
        entries.sort_by_key(|e| e.file_name());
        for entry in entries {
            let fname = entry.file_name().to_string_lossy().into_owned();
            let Some(stem) = fname.strip_suffix(".npy") else { continue };
            let (map, path) = if let Some(p) = stem.strip_prefix(PARAM_PREFIX) {
                (&mut w.params, p)
            } else if let Some(p) = stem.strip_prefix(BUFFER_PREFIX) {
                (&mut w.buffers, p)
            } else {
                continue;
            };
            if path.is_empty() {
                return Err(Error::invalid(fname, "a file named param.<path>.npy or buffer.<path>.npy", "an empty path"));
            }
            map.insert(path.to_string(), read_npy_f32(&entry.path(), device)?);
        }
        Ok(w)
    }

    /// Reads a `.safetensors` file onto `device` (as float32). A key `param.<path>` or
    /// `buffer.<path>` says its role; an unprefixed key is a buffer when it is one of
    /// `buffer_names` (e.g. [`crate::networks::Dit::BUFFER_NAMES`]) and a parameter otherwise,
    /// so both this crate's files ([`Weights::write_safetensors`]) and a flat export of the
    /// reference's state load.
    pub fn from_safetensors(path: &Path, buffer_names: &[&str], device: Device) -> Result<Weights> {
        let named = Tensor::read_safetensors(path)?;
        let mut w = Weights::default();
        for (key, t) in named {
            let (map, p) = if let Some(p) = key.strip_prefix(PARAM_PREFIX) {
                (&mut w.params, p)
            } else if let Some(p) = key.strip_prefix(BUFFER_PREFIX) {
                (&mut w.buffers, p)
            } else if buffer_names.contains(&key.as_str()) {
                (&mut w.buffers, key.as_str())
            } else {
                (&mut w.params, key.as_str())
            };
            if map.contains_key(p) {
                return Err(Error::invalid(format!("{}: key `{key}`", path.display()), "each path once", "a duplicate"));
            }
            let t = t.f_to_kind(Kind::Float)?.f_to_device(device)?;
            map.insert(p.to_string(), t);
        }
        Ok(w)
    }

    /// Writes the arrays to one `.safetensors` file with keys `param.<path>` / `buffer.<path>`.
    pub fn write_safetensors(&self, path: &Path) -> Result<()> {
        let mut named: Vec<(String, Tensor)> = Vec::new();
        for (k, v) in &self.params {
            named.push((format!("{PARAM_PREFIX}{k}"), v.f_detach()?.f_to_device(Device::Cpu)?.f_contiguous()?));
        }
        for (k, v) in &self.buffers {
            named.push((format!("{BUFFER_PREFIX}{k}"), v.f_detach()?.f_to_device(Device::Cpu)?.f_contiguous()?));
        }
        Ok(Tensor::write_safetensors(&named, path)?)
    }
}

/// Checks that `given` holds exactly the arrays of `expected` (path, shape): no path missing,
/// none extra, every shape equal. `role` (`parameter`, `buffer`) names the kind of array in
/// the error, which is an [`Error::InvalidArgument`] whose `name` is `<role> <path>`.
pub fn check_names_and_shapes(role: &str, expected: &[(String, Vec<i64>)], given: &BTreeMap<String, Tensor>) -> Result<()> {
    for name in given.keys() {
        if !expected.iter().any(|(n, _)| n == name) {
            return Err(Error::invalid(format!("{role} {name}"), format!("no such {role} for this configuration"), "an extra array"));
        }
    }
    for (name, shape) in expected {
        let t = given.get(name).ok_or_else(|| Error::invalid(format!("{role} {name}"), format!("an array of shape {shape:?}"), "none (missing)"))?;
        if &t.size() != shape {
            return Err(Error::invalid(format!("{role} {name}"), format!("shape {shape:?}"), format!("shape {:?}", t.size())));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn npy(dtype: &str, shape: &str, payload: &[u8]) -> Vec<u8> {
        let mut header = format!("{{'descr': '{dtype}', 'fortran_order': False, 'shape': {shape}, }}");
        while (10 + header.len() + 1) % 64 != 0 {
            header.push(' ');
        }
        header.push('\n');
        let mut b = b"\x93NUMPY\x01\x00".to_vec();
        b.extend((header.len() as u16).to_le_bytes());
        b.extend(header.as_bytes());
        b.extend(payload);
        b
    }

    #[test]
    fn read_npy_f32_reads_exact_payloads_and_refuses_truncated_or_other_dtypes() {
        let dir = std::env::temp_dir().join(format!("dspec-weights-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let p: Vec<u8> = [1.0f32, 2.0].iter().flat_map(|x| x.to_le_bytes()).collect();
        let write = |name: &str, bytes: Vec<u8>| {
            let f = dir.join(name);
            std::fs::write(&f, bytes).unwrap();
            f
        };
        let t = read_npy_f32(&write("ok.npy", npy("<f4", "(2,)", &p)), Device::Cpu).unwrap();
        assert_eq!(Vec::<f32>::try_from(&t).unwrap(), vec![1.0, 2.0]);
        assert!(read_npy_f32(&write("short.npy", npy("<f4", "(3,)", &p)), Device::Cpu).is_err());
        assert!(read_npy_f32(&write("int.npy", npy("<i4", "(2,)", &p)), Device::Cpu).unwrap_err().to_string().contains("float32"));
        std::fs::remove_dir_all(&dir).ok();
    }

    #[test]
    fn check_names_and_shapes_names_the_path() {
        let expected = vec![("a.kernel".to_string(), vec![2, 3]), ("a.bias".to_string(), vec![3])];
        let mut given = BTreeMap::new();
        given.insert("a.kernel".to_string(), Tensor::zeros([2, 3], (Kind::Float, Device::Cpu)));
        let e = check_names_and_shapes("parameter", &expected, &given).unwrap_err().to_string();
        assert!(e.contains("parameter a.bias") && e.contains("missing"), "{e}");
        given.insert("a.bias".to_string(), Tensor::zeros([4], (Kind::Float, Device::Cpu)));
        let e = check_names_and_shapes("parameter", &expected, &given).unwrap_err().to_string();
        assert!(e.contains("parameter a.bias") && e.contains("shape [3]") && e.contains("[4]"), "{e}");
        given.insert("a.bias".to_string(), Tensor::zeros([3], (Kind::Float, Device::Cpu)));
        check_names_and_shapes("parameter", &expected, &given).unwrap();
        given.insert("b".to_string(), Tensor::zeros([1], (Kind::Float, Device::Cpu)));
        let e = check_names_and_shapes("parameter", &expected, &given).unwrap_err().to_string();
        assert!(e.contains("parameter b") && e.contains("extra"), "{e}");
    }
}
