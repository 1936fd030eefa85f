//! Host-side arrays read from `.npy` files (format v1: little-endian, C order,
//! float32 / int32 / uint32), with the checks a strict reader needs.

use std::path::Path;

#[cfg(feature = "torch")]
use tch::{Device, Kind, Tensor};

use crate::error::{Error, Result};

/// Largest `.npy` file the reader accepts (bytes). Golden cases are small; this
/// bound keeps a corrupted or hostile file from causing an unbounded allocation.
pub const MAX_NPY_BYTES: u64 = 1 << 30;

/// The element data of an [`Array`].
#[derive(Debug, Clone, PartialEq)]
pub enum ArrayData {
    /// float32 (`<f4`).
    F32(Vec<f32>),
    /// int32 (`<i4`), used for labels.
    I32(Vec<i32>),
    /// uint32 (`<u4`), used for random bits and keys.
    U32(Vec<u32>),
}

impl ArrayData {
    /// The numpy type string of this data (`<f4`, `<i4`, `<u4`).
    pub fn dtype(&self) -> &'static str {
        match self {
            ArrayData::F32(_) => "<f4",
            ArrayData::I32(_) => "<i4",
            ArrayData::U32(_) => "<u4",
        }
    }

    /// Number of elements.
    pub fn len(&self) -> usize {
        match self {
            ArrayData::F32(v) => v.len(),
            ArrayData::I32(v) => v.len(),
            ArrayData::U32(v) => v.len(),
        }
    }

    /// Whether there are no elements.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

impl From<crate::npy::NpyData> for ArrayData {
    fn from(d: crate::npy::NpyData) -> ArrayData {
        match d {
            crate::npy::NpyData::F32(v) => ArrayData::F32(v),
            crate::npy::NpyData::I32(v) => ArrayData::I32(v),
            crate::npy::NpyData::U32(v) => ArrayData::U32(v),
        }
    }
}

/// Reads a regular file of at most [`MAX_NPY_BYTES`] (a FIFO or device would block or never
/// end; the bound keeps a hostile file from an unbounded allocation).
fn read_bounded(path: &Path) -> Result<Vec<u8>> {
    use std::io::Read;
    let io = |source| Error::Io { path: path.to_path_buf(), source };
    let file = std::fs::File::open(path).map_err(io)?;
    let meta = file.metadata().map_err(io)?;
    if !meta.is_file() {
        return Err(Error::invalid("npy file", "a regular file", format!("{:?}", meta.file_type())));
    }
    if meta.len() > MAX_NPY_BYTES {
        return Err(Error::invalid("npy file size", format!("at most {MAX_NPY_BYTES} bytes"), meta.len()));
    }
    // Read at most one byte past the bound, so a file that grows meanwhile is still bounded.
    let mut bytes = Vec::with_capacity(meta.len() as usize);
    file.take(MAX_NPY_BYTES + 1).read_to_end(&mut bytes).map_err(io)?;
    if bytes.len() as u64 > MAX_NPY_BYTES {
        return Err(Error::invalid("npy file size", format!("at most {MAX_NPY_BYTES} bytes"), "a file that grew past it while being read"));
    }
    Ok(bytes)
}

/// A dense C-order array on the host.
#[derive(Debug, Clone, PartialEq)]
pub struct Array {
    /// The shape (empty for a scalar).
    pub shape: Vec<usize>,
    /// The elements in C order.
    pub data: ArrayData,
}

impl Array {
    /// A float32 array; errors if `data.len()` does not match the shape.
    pub fn f32(shape: Vec<usize>, data: Vec<f32>) -> Result<Array> {
        Self::checked(shape, ArrayData::F32(data))
    }

    /// A uint32 array; errors if `data.len()` does not match the shape.
    pub fn u32(shape: Vec<usize>, data: Vec<u32>) -> Result<Array> {
        Self::checked(shape, ArrayData::U32(data))
    }

    fn checked(shape: Vec<usize>, data: ArrayData) -> Result<Array> {
        let n: usize = shape.iter().product();
        if n != data.len() {
            return Err(Error::invalid("data", format!("{n} elements for shape {shape:?}"), data.len()));
        }
        Ok(Array { shape, data })
    }

    /// The numpy type string.
    pub fn dtype(&self) -> &'static str {
        self.data.dtype()
    }

    /// Reads a `.npy` file strictly: the header must parse, the dtype must be one
    /// of `<f4 <i4 <u4`, the order must be C, and the payload must hold exactly
    /// the declared number of elements (neither truncated nor padded).
    pub fn read_npy(path: &Path) -> Result<Array> {
        Self::parse_npy(&read_bounded(path)?)
    }

    /// Reads an implementation's output file (what `verify` compares): as
    /// [`Array::read_npy`], and also float64 (rounded to float32) and fortran order
    /// (reordered), each named in the returned notes.
    pub fn read_npy_candidate(path: &Path) -> Result<(Array, Vec<String>)> {
        let bytes = read_bounded(path)?;
        let (shape, data, how) = crate::npy::parse_npy_candidate(&bytes)
            .map_err(|msg| Error::invalid("npy", "a little-endian float32/int32/uint32 (or float64) .npy file", msg))?;
        let mut notes = Vec::new();
        if how.rounded_from_f64 {
            notes.push("candidate is float64, rounded to float32 before comparing".to_string());
        }
        if how.fortran_order {
            notes.push("candidate is in fortran order, read as such".to_string());
        }
        Ok((Array { shape, data: ArrayData::from(data) }, notes))
    }

    /// Parses the bytes of a `.npy` file (see [`Array::read_npy`]). The parser itself is the
    /// pure [`crate::npy`] (fuzzed under `fuzz/`); it never allocates more than `bytes.len()`.
    pub fn parse_npy(bytes: &[u8]) -> Result<Array> {
        let (shape, data) = crate::npy::parse_npy(bytes)
            .map_err(|msg| Error::invalid("npy", "a little-endian C-order float32/int32/uint32 .npy file", msg))?;
        Ok(Array { shape, data: ArrayData::from(data) })
    }

    /// Writes the array as a format-v1 `.npy` file.
    pub fn write_npy(&self, path: &Path) -> Result<()> {
        let io = |source| Error::Io { path: path.to_path_buf(), source };
        let shape: Vec<u64> = self.shape.iter().map(|&d| d as u64).collect();
        let buf = match &self.data {
            ArrayData::F32(v) => npy_bytes(&shape, v),
            ArrayData::I32(v) => npy_bytes(&shape, v),
            ArrayData::U32(v) => npy_bytes(&shape, v),
        }
        .map_err(io)?;
        std::fs::write(path, buf).map_err(io)
    }

    #[cfg(feature = "torch")]
    /// Copies the array into a tensor on `device` (float32, int64 for labels, and
    /// uint32 as int64 since libtorch's uint32 support is partial).
    pub fn to_tensor(&self, device: Device) -> Result<Tensor> {
        let shape: Vec<i64> = self.shape.iter().map(|&d| d as i64).collect();
        let t = match &self.data {
            ArrayData::F32(v) => Tensor::f_from_slice(v)?,
            ArrayData::I32(v) => Tensor::f_from_slice(v)?.f_to_kind(Kind::Int64)?,
            ArrayData::U32(v) => {
                let w: Vec<i64> = v.iter().map(|&x| x as i64).collect();
                Tensor::f_from_slice(&w)?
            }
        };
        Ok(t.f_reshape(&shape)?.f_to_device(device)?)
    }

    #[cfg(feature = "torch")]
    /// Copies a float tensor (any device) into a float32 host array.
    pub fn from_tensor(t: &Tensor) -> Result<Array> {
        let shape: Vec<usize> = t.size().iter().map(|&d| d as usize).collect();
        let flat = t.f_detach()?.f_to_device(Device::Cpu)?.f_to_kind(Kind::Float)?.f_contiguous()?.f_view([-1])?;
        let data = Vec::<f32>::try_from(&flat)?;
        Array::f32(shape, data)
    }

    /// The float32 elements, or an error naming `what` if the array has another dtype.
    pub fn as_f32(&self, what: &str) -> Result<&[f32]> {
        match &self.data {
            ArrayData::F32(v) => Ok(v),
            d => Err(Error::invalid(what, "float32 (<f4)", d.dtype())),
        }
    }
}

fn npy_bytes<T: npyz::AutoSerialize + Copy>(shape: &[u64], v: &[T]) -> std::io::Result<Vec<u8>> {
    use npyz::WriterBuilder;
    let mut buf = Vec::new();
    {
        let mut w = npyz::WriteOptions::<T>::new().default_dtype().shape(shape).writer(&mut buf).begin_nd()?;
        w.extend(v.iter().copied())?;
        w.finish()?;
    }
    Ok(buf)
}
