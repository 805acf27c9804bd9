//! Header parsing: magic, version, metadata and tensor infos.
//!
//! Layout (little-endian, versions 2 and 3 are identical):
//! `"GGUF" u32:version u64:n_tensors u64:n_kv`, then `n_kv` times
//! `string:key u32:type value`, then `n_tensors` times
//! `string:name u32:n_dims u64[n_dims]:dims u32:type u64:offset`; strings are
//! `u64:len` + UTF-8 bytes. The data section starts at the next multiple of
//! the alignment.

use super::{GgufError, MetaValue};
use std::collections::BTreeMap;
use std::path::Path;

/// Arrays of arrays deeper than this are rejected, so a crafted file cannot
/// overflow the stack (real files nest at most once).
const MAX_ARRAY_DEPTH: u32 = 8;

/// The dimension limit of ggml (`GGML_MAX_DIMS`).
pub(super) const MAX_DIMS: u32 = 4;

/// One tensor info as stored, before validation against the data section.
pub(super) struct RawTensor {
    pub name: String,
    pub dims: Vec<u64>,
    pub type_id: u32,
    pub offset: u64,
}

/// Everything before the data section.
pub(super) struct Header {
    pub version: u32,
    pub metadata: BTreeMap<String, MetaValue>,
    pub tensors: Vec<RawTensor>,
    /// Offset just past the last tensor info (before alignment padding).
    pub end: u64,
}

/// A low-level failure, given its context by the caller.
enum Fail {
    /// Not enough bytes left.
    Short { offset: u64, needed: u64 },
    /// Bytes present but invalid.
    Bad(String),
}

/// A failure plus where inside a nested array it happened (innermost index first).
struct Located {
    fail: Fail,
    indices: Vec<u64>,
}

impl Located {
    /// ` (array element 3)`, ` (array element [0][3])`, or nothing.
    fn position(&self) -> String {
        match self.indices.as_slice() {
            [] => String::new(),
            [i] => format!(" (array element {i})"),
            many => {
                let path: String = many.iter().rev().map(|i| format!("[{i}]")).collect();
                format!(" (array element {path})")
            }
        }
    }
}

impl From<Fail> for Located {
    fn from(fail: Fail) -> Self {
        Located {
            fail,
            indices: Vec::new(),
        }
    }
}

struct Cursor<'a> {
    buf: &'a [u8],
    pos: usize,
}

impl<'a> Cursor<'a> {
    fn remaining(&self) -> u64 {
        (self.buf.len() - self.pos) as u64
    }

    fn take(&mut self, n: u64) -> Result<&'a [u8], Fail> {
        if n > self.remaining() {
            return Err(Fail::Short {
                offset: self.pos as u64,
                needed: n,
            });
        }
        // `n <= remaining`, which is a usize.
        let n = n as usize;
        let s = &self.buf[self.pos..self.pos + n];
        self.pos += n;
        Ok(s)
    }

    fn bytes<const N: usize>(&mut self) -> Result<[u8; N], Fail> {
        let mut a = [0u8; N];
        a.copy_from_slice(self.take(N as u64)?);
        Ok(a)
    }

    fn u32(&mut self) -> Result<u32, Fail> {
        Ok(u32::from_le_bytes(self.bytes()?))
    }

    fn u64(&mut self) -> Result<u64, Fail> {
        Ok(u64::from_le_bytes(self.bytes()?))
    }

    fn str(&mut self) -> Result<&'a str, Fail> {
        let len = self.u64()?;
        let bytes = self.take(len)?;
        std::str::from_utf8(bytes)
            .map_err(|e| Fail::Bad(format!("string is not valid UTF-8 ({e})")))
    }

    /// One metadata value of GGUF type `ty`.
    fn value(&mut self, ty: u32, depth: u32) -> Result<MetaValue, Located> {
        Ok(match ty {
            0 => MetaValue::U8(u8::from_le_bytes(self.bytes()?)),
            1 => MetaValue::I8(i8::from_le_bytes(self.bytes()?)),
            2 => MetaValue::U16(u16::from_le_bytes(self.bytes()?)),
            3 => MetaValue::I16(i16::from_le_bytes(self.bytes()?)),
            4 => MetaValue::U32(u32::from_le_bytes(self.bytes()?)),
            5 => MetaValue::I32(i32::from_le_bytes(self.bytes()?)),
            6 => MetaValue::F32(f32::from_le_bytes(self.bytes()?)),
            // ggml and the Python reader treat any non-zero byte as true.
            7 => MetaValue::Bool(self.bytes::<1>()?[0] != 0),
            8 => MetaValue::String(self.str()?.to_owned()),
            9 => {
                if depth >= MAX_ARRAY_DEPTH {
                    return Err(Fail::Bad(format!(
                        "arrays nested more than {MAX_ARRAY_DEPTH} deep"
                    ))
                    .into());
                }
                let elem_ty = self.u32()?;
                let Some(min) = min_value_size(elem_ty) else {
                    return Err(Fail::Bad(bad_type(elem_ty, "array element")).into());
                };
                let len = self.u64()?;
                // Reject impossible lengths before allocating for them.
                if len > self.remaining() / min {
                    return Err(Fail::Short {
                        offset: self.pos as u64,
                        needed: len.saturating_mul(min),
                    }
                    .into());
                }
                let mut items = Vec::with_capacity(len as usize);
                for i in 0..len {
                    match self.value(elem_ty, depth + 1) {
                        Ok(v) => items.push(v),
                        Err(mut e) => {
                            e.indices.push(i);
                            return Err(e);
                        }
                    }
                }
                MetaValue::Array(items)
            }
            10 => MetaValue::U64(u64::from_le_bytes(self.bytes()?)),
            11 => MetaValue::I64(i64::from_le_bytes(self.bytes()?)),
            12 => MetaValue::F64(f64::from_le_bytes(self.bytes()?)),
            other => return Err(Fail::Bad(bad_type(other, "value")).into()),
        })
    }
}

/// The smallest encoding of a value of GGUF type `ty`; `None` if unknown.
fn min_value_size(ty: u32) -> Option<u64> {
    Some(match ty {
        0 | 1 | 7 => 1,
        2 | 3 => 2,
        4..=6 => 4,
        8 | 10..=12 => 8,
        9 => 12,
        _ => return None,
    })
}

fn bad_type(ty: u32, what: &str) -> String {
    format!("unknown {what} type {ty} (expected a GGUF value type 0-12)")
}

/// Parses the header of `buf`, the contents of `path`.
pub(super) fn parse_header(buf: &[u8], path: &Path) -> Result<Header, GgufError> {
    let file_len = buf.len() as u64;
    let located = |what: &dyn Fn() -> String, e: Located| {
        let what = format!("{}{}", what(), e.position());
        match e.fail {
            Fail::Short { offset, needed } => GgufError::Truncated {
                path: path.to_path_buf(),
                what,
                offset,
                needed,
                file_len,
            },
            Fail::Bad(problem) => GgufError::Malformed {
                path: path.to_path_buf(),
                what,
                problem,
            },
        }
    };
    let fail = |what: &dyn Fn() -> String, e: Fail| located(what, e.into());

    if buf.len() < 4 || &buf[..4] != b"GGUF" {
        return Err(GgufError::BadMagic {
            path: path.to_path_buf(),
            found: buf[..buf.len().min(4)].to_vec(),
        });
    }
    let mut c = Cursor { buf, pos: 4 };
    let version = c.u32().map_err(|e| fail(&|| "the version".into(), e))?;
    if version != 2 && version != 3 {
        let hint = if version & 0xffff == 0 && version != 0 {
            "; the file looks big-endian"
        } else if version == 1 {
            "; version 1 files predate 64-bit counts, convert them with a current llama.cpp"
        } else {
            ""
        };
        return Err(GgufError::UnsupportedVersion {
            path: path.to_path_buf(),
            version,
            hint,
        });
    }
    let n_tensors = c
        .u64()
        .map_err(|e| fail(&|| "the tensor count".into(), e))?;
    let n_kv = c
        .u64()
        .map_err(|e| fail(&|| "the metadata count".into(), e))?;

    let mut metadata = BTreeMap::new();
    for i in 0..n_kv {
        let key = c
            .str()
            .map_err(|e| fail(&|| format!("the key of metadata entry {i}"), e))?;
        let ty = c
            .u32()
            .map_err(|e| fail(&|| format!("the type of metadata key '{key}'"), e))?;
        let value = c
            .value(ty, 0)
            .map_err(|e| located(&|| format!("the value of metadata key '{key}'"), e))?;
        if metadata.insert(key.to_owned(), value).is_some() {
            return Err(fail(
                &|| format!("metadata key '{key}'"),
                Fail::Bad("the key appears twice".into()),
            ));
        }
    }

    let mut tensors = Vec::with_capacity(n_tensors.min(1 << 16) as usize);
    for i in 0..n_tensors {
        let name = c
            .str()
            .map_err(|e| fail(&|| format!("the name of tensor info {i}"), e))?;
        let what = || format!("the info of tensor '{name}'");
        let n_dims = c.u32().map_err(|e| fail(&what, e))?;
        if n_dims > MAX_DIMS {
            return Err(fail(
                &what,
                Fail::Bad(format!(
                    "{n_dims} dimensions (GGUF allows at most {MAX_DIMS})"
                )),
            ));
        }
        let dims = (0..n_dims)
            .map(|_| c.u64())
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| fail(&what, e))?;
        let type_id = c.u32().map_err(|e| fail(&what, e))?;
        let offset = c.u64().map_err(|e| fail(&what, e))?;
        tensors.push(RawTensor {
            name: name.to_owned(),
            dims,
            type_id,
            offset,
        });
    }

    Ok(Header {
        version,
        metadata,
        tensors,
        end: c.pos as u64,
    })
}
