//! A strict, pure reader of `.npy` files (little-endian, C-order float32 / int32 / uint32),
//! shared by the weight loaders and the golden harness.
//!
//! Nothing here touches libtorch or another module of the crate (only `std`), so that
//! `fuzz/` can include this very file with `#[path]` and fuzz it without linking libtorch.
//! A small parser with explicit bounds cannot be made to allocate more than the input's
//! size, to recurse, or to overflow on a declared shape.

/// Largest `.npy` header (the Python dict literal) accepted, in bytes. numpy writes
/// headers of 64 to 128 bytes for the arrays of a golden case.
pub const MAX_NPY_HEADER_BYTES: usize = 1 << 16;

/// The element data of a parsed `.npy` file.
#[derive(Debug, Clone, PartialEq)]
pub enum NpyData {
    /// `<f4`.
    F32(Vec<f32>),
    /// `<i4`.
    I32(Vec<i32>),
    /// `<u4`.
    U32(Vec<u32>),
}

// `len` / `is_empty` are used by the fuzz targets, which include this file.
#[allow(dead_code)]
impl NpyData {
    /// Number of elements.
    pub fn len(&self) -> usize {
        match self {
            NpyData::F32(v) => v.len(),
            NpyData::I32(v) => v.len(),
            NpyData::U32(v) => v.len(),
        }
    }

    /// Whether there are no elements.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// The three settings of a `.npy` header.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NpyHeader {
    /// The numpy type string (`<f4`, ...).
    pub descr: String,
    /// `fortran_order`.
    pub fortran_order: bool,
    /// The shape.
    pub shape: Vec<u64>,
}

fn unreadable(why: impl std::fmt::Display) -> String {
    format!("unreadable header ({why})")
}

/// Splits a `.npy` file into its header dict text and its payload, checking the magic,
/// the version and the declared header length against the bytes actually present.
pub fn split_npy(bytes: &[u8]) -> Result<(&str, &[u8]), String> {
    if bytes.len() < 10 || &bytes[..6] != b"\x93NUMPY" {
        return Err(unreadable("no .npy magic string"));
    }
    let (major, minor) = (bytes[6], bytes[7]);
    let (len, start) = match major {
        1 => (u16::from_le_bytes([bytes[8], bytes[9]]) as usize, 10),
        2 | 3 if bytes.len() >= 12 => (u32::from_le_bytes([bytes[8], bytes[9], bytes[10], bytes[11]]) as usize, 12),
        2 | 3 => return Err(unreadable("file ends inside the header length")),
        _ => return Err(unreadable(format!("format version {major}.{minor}; 1.0, 2.0 and 3.0 are understood"))),
    };
    if minor != 0 {
        return Err(unreadable(format!("format version {major}.{minor}; 1.0, 2.0 and 3.0 are understood")));
    }
    if len > MAX_NPY_HEADER_BYTES {
        return Err(unreadable(format!("declares a header of {len} bytes, more than the {MAX_NPY_HEADER_BYTES} accepted")));
    }
    let rest = &bytes[start..];
    if len > rest.len() {
        return Err(unreadable(format!("declares a header of {len} bytes but the file has {} after the preamble", rest.len())));
    }
    let (text, payload) = rest.split_at(len);
    let text = std::str::from_utf8(text).map_err(|_| unreadable("header is not UTF-8 text"))?;
    Ok((text, payload))
}

/// A cursor over the header dict literal.
struct Lexer<'a> {
    s: &'a [u8],
    i: usize,
}

impl<'a> Lexer<'a> {
    fn ws(&mut self) {
        while self.i < self.s.len() && matches!(self.s[self.i], b' ' | b'\t' | b'\n' | b'\r') {
            self.i += 1;
        }
    }

    fn peek(&mut self) -> Option<u8> {
        self.ws();
        self.s.get(self.i).copied()
    }

    fn eat(&mut self, c: u8) -> bool {
        if self.peek() == Some(c) {
            self.i += 1;
            true
        } else {
            false
        }
    }

    fn expect(&mut self, c: u8, what: &str) -> Result<(), String> {
        if self.eat(c) {
            Ok(())
        } else {
            Err(unreadable(format!("expected `{}` {what} at byte {}", c as char, self.i)))
        }
    }

    fn string(&mut self) -> Result<&'a str, String> {
        let q = match self.peek() {
            Some(q @ (b'\'' | b'"')) => q,
            _ => return Err(unreadable(format!("expected a quoted string at byte {}", self.i))),
        };
        let start = self.i + 1;
        let end = self.s[start..].iter().position(|&c| c == q).ok_or_else(|| unreadable("unterminated string"))? + start;
        self.i = end + 1;
        let raw = &self.s[start..end];
        if raw.contains(&b'\\') {
            return Err(unreadable("escape sequences in a header string"));
        }
        std::str::from_utf8(raw).map_err(|_| unreadable("header string is not UTF-8"))
    }

    fn word(&mut self) -> &'a [u8] {
        self.ws();
        let start = self.i;
        while self.i < self.s.len() && (self.s[self.i].is_ascii_alphanumeric() || self.s[self.i] == b'_') {
            self.i += 1;
        }
        &self.s[start..self.i]
    }

    fn boolean(&mut self) -> Result<bool, String> {
        match self.word() {
            b"True" => Ok(true),
            b"False" => Ok(false),
            w => Err(unreadable(format!("`fortran_order` is `{}`, not True or False", String::from_utf8_lossy(w)))),
        }
    }

    fn shape(&mut self) -> Result<Vec<u64>, String> {
        self.expect(b'(', "opening the shape tuple")?;
        let mut shape = Vec::new();
        loop {
            if self.eat(b')') {
                return Ok(shape);
            }
            if !shape.is_empty() {
                self.expect(b',', "between dimensions")?;
                if self.eat(b')') {
                    return Ok(shape);
                }
            }
            let w = self.word();
            let w = w.strip_suffix(b"L").unwrap_or(w);
            if w.is_empty() || !w.iter().all(u8::is_ascii_digit) {
                return Err(unreadable(format!("dimension `{}` is not a non-negative integer", String::from_utf8_lossy(w))));
            }
            let d: u64 = std::str::from_utf8(w)
                .ok()
                .and_then(|s| s.parse().ok())
                .ok_or_else(|| unreadable(format!("dimension {} does not fit in 64 bits", String::from_utf8_lossy(w))))?;
            if shape.len() >= 64 {
                return Err(unreadable("more than 64 dimensions"));
            }
            shape.push(d);
        }
    }
}

/// Parses the header dict literal `{'descr': '<f4', 'fortran_order': False, 'shape': (2, 3), }`:
/// exactly these three keys, in any order, each once.
pub fn parse_npy_header(text: &str) -> Result<NpyHeader, String> {
    let mut lx = Lexer { s: text.as_bytes(), i: 0 };
    lx.expect(b'{', "opening the header dict")?;
    let (mut descr, mut fortran, mut shape) = (None, None, None);
    loop {
        if lx.eat(b'}') {
            break;
        }
        let key = lx.string()?;
        lx.expect(b':', "after a key")?;
        match key {
            "descr" if descr.is_none() => {
                if lx.peek() == Some(b'[') {
                    return Err("a structured or nested dtype".into());
                }
                descr = Some(lx.string()?.to_string());
            }
            "fortran_order" if fortran.is_none() => fortran = Some(lx.boolean()?),
            "shape" if shape.is_none() => shape = Some(lx.shape()?),
            "descr" | "fortran_order" | "shape" => return Err(unreadable(format!("key `{key}` given twice"))),
            other => return Err(unreadable(format!("unknown key `{other}`"))),
        }
        if !lx.eat(b',') {
            lx.expect(b'}', "closing the header dict")?;
            break;
        }
    }
    lx.ws();
    if lx.i != lx.s.len() {
        return Err(unreadable(format!("text after the header dict at byte {}", lx.i)));
    }
    match (descr, fortran, shape) {
        (Some(descr), Some(fortran_order), Some(shape)) => Ok(NpyHeader { descr, fortran_order, shape }),
        (d, f, s) => {
            let missing: Vec<&str> = [("descr", d.is_none()), ("fortran_order", f.is_none()), ("shape", s.is_none())]
                .iter()
                .filter(|(_, m)| *m)
                .map(|(k, _)| *k)
                .collect();
            Err(unreadable(format!("missing key(s) {}", missing.join(", "))))
        }
    }
}

/// Parses the bytes of a format-v1 `.npy` file: the header must parse, the dtype must be
/// one of `<f4 <i4 <u4`, the order must be C, and the payload must hold exactly the
/// declared number of elements (neither truncated nor padded). Never allocates more than
/// the size of `bytes`. Returns the shape and the elements, or a message saying what is wrong.
pub fn parse_npy(bytes: &[u8]) -> Result<(Vec<usize>, NpyData), String> {
    let (text, payload) = split_npy(bytes)?;
    let header = parse_npy_header(text)?;
    if header.fortran_order {
        return Err("fortran order".into());
    }
    let mut n: u64 = 1;
    let mut shape = Vec::with_capacity(header.shape.len());
    for &d in &header.shape {
        n = n.checked_mul(d).ok_or_else(|| format!("shape {:?} overflows", header.shape))?;
        shape.push(usize::try_from(d).map_err(|_| format!("dimension {d} too large"))?);
    }
    let ours = matches!(header.descr.as_str(), "<f4" | "<i4" | "<u4");
    if !ours {
        return Err(format!("dtype `{}`", header.descr));
    }
    let want = n.checked_mul(4).ok_or_else(|| format!("shape {shape:?} overflows"))?;
    if payload.len() as u64 != want {
        return Err(format!("payload of {} bytes where shape {shape:?} needs {want} (truncated or padded file)", payload.len()));
    }
    let words = payload.chunks_exact(4).map(|c| [c[0], c[1], c[2], c[3]]);
    let data = match header.descr.as_str() {
        "<f4" => NpyData::F32(words.map(f32::from_le_bytes).collect()),
        "<i4" => NpyData::I32(words.map(i32::from_le_bytes).collect()),
        _ => NpyData::U32(words.map(u32::from_le_bytes).collect()),
    };
    Ok((shape, data))
}

/// How [`parse_npy_candidate`] had to read a file that is not in the strict format.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Leniency {
    /// The file was float64 (`<f8`) and was rounded to float32 (round to nearest even).
    pub rounded_from_f64: bool,
    /// The file was in fortran (column-major) order and was reordered to C order.
    pub fortran_order: bool,
}

/// Reads an *implementation's* output file: like [`parse_npy`], and also float64 (`<f8`,
/// rounded to float32 as `numpy.float32` would) and fortran order (what `np.save(a.T)` writes
/// for a transposed view), whose meaning is unambiguous. The golden reader stays strict.
pub fn parse_npy_candidate(bytes: &[u8]) -> Result<(Vec<usize>, NpyData, Leniency), String> {
    let (text, payload) = split_npy(bytes)?;
    let header = parse_npy_header(text)?;
    let mut n: u64 = 1;
    let mut shape = Vec::with_capacity(header.shape.len());
    for &d in &header.shape {
        n = n.checked_mul(d).ok_or_else(|| format!("shape {:?} overflows", header.shape))?;
        shape.push(usize::try_from(d).map_err(|_| format!("dimension {d} too large"))?);
    }
    let width: u64 = match header.descr.as_str() {
        "<f4" | "<i4" | "<u4" => 4,
        "<f8" => 8,
        d => return Err(format!("dtype `{d}` (accepted: <f4, <i4, <u4, and <f8 rounded to float32)")),
    };
    let want = n.checked_mul(width).ok_or_else(|| format!("shape {shape:?} overflows"))?;
    if payload.len() as u64 != want {
        return Err(format!("payload of {} bytes where shape {shape:?} needs {want} (truncated or padded file)", payload.len()));
    }
    let mut how = Leniency { rounded_from_f64: width == 8, fortran_order: header.fortran_order };
    let data = if width == 8 {
        NpyData::F32(payload.chunks_exact(8).map(|c| f64::from_le_bytes([c[0], c[1], c[2], c[3], c[4], c[5], c[6], c[7]]) as f32).collect())
    } else {
        let words = payload.chunks_exact(4).map(|c| [c[0], c[1], c[2], c[3]]);
        match header.descr.as_str() {
            "<f4" => NpyData::F32(words.map(f32::from_le_bytes).collect()),
            "<i4" => NpyData::I32(words.map(i32::from_le_bytes).collect()),
            _ => NpyData::U32(words.map(u32::from_le_bytes).collect()),
        }
    };
    if !header.fortran_order || shape.len() < 2 {
        // A 0-d or 1-d array is the same in both orders.
        how.fortran_order = false;
        return Ok((shape, data, how));
    }
    let data = match data {
        NpyData::F32(v) => NpyData::F32(fortran_to_c(&v, &shape)),
        NpyData::I32(v) => NpyData::I32(fortran_to_c(&v, &shape)),
        NpyData::U32(v) => NpyData::U32(fortran_to_c(&v, &shape)),
    };
    Ok((shape, data, how))
}

/// Reorders column-major elements of `shape` into row-major order.
fn fortran_to_c<T: Copy>(v: &[T], shape: &[usize]) -> Vec<T> {
    let mut out = Vec::with_capacity(v.len());
    let mut idx = vec![0usize; shape.len()];
    for _ in 0..v.len() {
        // Column-major offset of the row-major index `idx`: the first axis varies fastest.
        let (mut off, mut stride) = (0usize, 1usize);
        for (&i, &d) in idx.iter().zip(shape) {
            off += i * stride;
            stride *= d;
        }
        out.push(v[off]);
        for k in (0..shape.len()).rev() {
            idx[k] += 1;
            if idx[k] < shape[k] {
                break;
            }
            idx[k] = 0;
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn npy(dict: &str, payload: &[u8]) -> Vec<u8> {
        let mut out = b"\x93NUMPY\x01\x00".to_vec();
        out.extend((dict.len() as u16).to_le_bytes());
        out.extend(dict.as_bytes());
        out.extend(payload);
        out
    }

    #[test]
    fn headers_numpy_writes_parse() {
        for (dict, shape) in [
            ("{'descr': '<f4', 'fortran_order': False, 'shape': (2, 3), }     \n", vec![2, 3]),
            ("{'descr': '<u4', 'fortran_order': False, 'shape': (2,), }\n", vec![2]),
            ("{'descr': '<i4', 'fortran_order': False, 'shape': (), }\n", vec![]),
            ("{\"shape\": (1, 1), \"descr\": \"<f4\", \"fortran_order\": False}", vec![1, 1]),
        ] {
            let h = parse_npy_header(dict).unwrap();
            assert_eq!(h.shape, shape, "{dict}");
        }
    }

    #[test]
    fn scalars_and_empty_arrays() {
        let (s, d) = parse_npy(&npy("{'descr': '<f4', 'fortran_order': False, 'shape': (), }\n", &1f32.to_le_bytes())).unwrap();
        assert_eq!((s, d), (vec![], NpyData::F32(vec![1.0])));
        let (s, d) = parse_npy(&npy("{'descr': '<u4', 'fortran_order': False, 'shape': (0, 5), }\n", &[])).unwrap();
        assert_eq!((s, d), (vec![0, 5], NpyData::U32(vec![])));
    }

    #[test]
    fn malformed_headers_are_refused() {
        for (dict, needle) in [
            ("{'descr': '<f4', 'fortran_order': False}", "missing key(s) shape"),
            ("{'descr': '<f4', 'descr': '<f4', 'fortran_order': False, 'shape': ()}", "given twice"),
            ("{'descr': '<f4', 'fortran_order': 0, 'shape': ()}", "not True or False"),
            ("{'descr': '<f4', 'fortran_order': False, 'shape': (-1,)}", "not a non-negative integer"),
            ("{'descr': '<f4', 'fortran_order': False, 'shape': (99999999999999999999999,)}", "does not fit"),
            ("{'descr': [('a', '<f4')], 'fortran_order': False, 'shape': ()}", "structured"),
            ("{'descr': '<f4', 'fortran_order': False, 'shape': ()} x", "text after"),
            ("{'descr': '<f4', 'fortran_order': False, 'shape': (1, 2", "expected"),
            ("{'descr: '<f4'", "expected"),
            ("{'extra': 1}", "unknown key"),
        ] {
            let e = parse_npy(&npy(dict, &[])).unwrap_err();
            assert!(e.contains(needle), "{dict}: {e}");
        }
    }

    #[test]
    fn declared_header_longer_than_the_file() {
        let mut b = b"\x93NUMPY\x02\x00".to_vec();
        b.extend(u32::MAX.to_le_bytes());
        assert!(parse_npy(&b).unwrap_err().contains("more than the"));
        let mut b = b"\x93NUMPY\x01\x00".to_vec();
        b.extend(100u16.to_le_bytes());
        b.extend(b"{}");
        assert!(parse_npy(&b).unwrap_err().contains("after the preamble"));
    }

    #[test]
    fn shapes_that_overflow() {
        let e = parse_npy(&npy("{'descr': '<f4', 'fortran_order': False, 'shape': (4294967296, 4294967296), }", &[])).unwrap_err();
        assert!(e.contains("overflows"), "{e}");
        let e = parse_npy(&npy("{'descr': '<f4', 'fortran_order': False, 'shape': (4611686018427387904,), }", &[])).unwrap_err();
        assert!(e.contains("overflows"), "{e}");
    }


    #[test]
    fn candidates_may_be_float64_or_fortran_ordered() {
        // float64 [2, 3] in fortran order: column-major elements of [[0, 1, 2], [3, 4, 5]].
        let col_major = [0.0f64, 3.0, 1.0, 4.0, 2.0, 5.0 + 1e-12];
        let payload: Vec<u8> = col_major.iter().flat_map(|x| x.to_le_bytes()).collect();
        let b = npy("{'descr': '<f8', 'fortran_order': True, 'shape': (2, 3), }", &payload);
        assert!(parse_npy(&b).is_err(), "the strict reader refuses it");
        let (shape, data, how) = parse_npy_candidate(&b).unwrap();
        assert_eq!(shape, vec![2, 3]);
        assert_eq!(data, NpyData::F32(vec![0.0, 1.0, 2.0, 3.0, 4.0, 5.0]));
        assert_eq!(how, Leniency { rounded_from_f64: true, fortran_order: true });
        // 3-d fortran order, int32: element (i, j, k) stored at i + 2 j + 4 k.
        let mut fort = vec![0i32; 12];
        for i in 0..2 {
            for j in 0..2 {
                for k in 0..3 {
                    fort[i + 2 * j + 4 * k] = (100 * i + 10 * j + k) as i32;
                }
            }
        }
        let payload: Vec<u8> = fort.iter().flat_map(|x| x.to_le_bytes()).collect();
        let (_, data, _) = parse_npy_candidate(&npy("{'descr': '<i4', 'fortran_order': True, 'shape': (2, 2, 3), }", &payload)).unwrap();
        let want: Vec<i32> = (0..2).flat_map(|i| (0..2).flat_map(move |j| (0..3).map(move |k| 100 * i + 10 * j + k))).collect();
        assert_eq!(data, NpyData::I32(want));
        // Other dtypes are still refused, by name.
        assert!(parse_npy_candidate(&npy("{'descr': '<f2', 'fortran_order': False, 'shape': (1,), }", &[0, 0])).unwrap_err().contains("<f2"));
        // A 1-d fortran file is simply C order: no note.
        let (_, _, how) = parse_npy_candidate(&npy("{'descr': '<f4', 'fortran_order': True, 'shape': (1,), }", &1f32.to_le_bytes())).unwrap();
        assert_eq!(how, Leniency::default());
    }
}
