//! safetensors header parser. Reads only the header; never allocates from an untrusted length
//! without a bound; checks every offset against the file size. Memory is bounded whatever the
//! file claims: the header text is at most [`MAX_HEADER`] bytes and is decoded straight into
//! the typed entries (no generic JSON tree), with at most [`MAX_DIMS`] dimensions per shape, so
//! reading any file costs less than about three times [`MAX_HEADER`].

use std::collections::BTreeMap;
use std::io::Read;

use serde_json::Value;

/// Largest header we accept. The format allows 100 MB, but a model with 100,000 tensors needs
/// about 15 MB, and this bound is what keeps reading any file within a fixed memory cap.
pub const MAX_HEADER: u64 = 16 * 1024 * 1024;
/// Most dimensions a tensor shape may have.
pub const MAX_DIMS: usize = 16;

/// One header entry as stored: a tensor, or the `__metadata__` string map.
enum RawEntry {
    Tensor {
        dtype: String,
        shape: Vec<u64>,
        offsets: [u64; 2],
    },
    Metadata(BTreeMap<String, String>),
}

/// The header object, decoded entry by entry.
struct RawHeader(Vec<(String, RawEntry)>);

impl<'de> serde::Deserialize<'de> for RawHeader {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct Entries;
        impl<'de> serde::de::Visitor<'de> for Entries {
            type Value = RawHeader;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("a JSON object of tensors")
            }
            fn visit_map<A: serde::de::MapAccess<'de>>(self, mut map: A) -> Result<RawHeader, A::Error> {
                let mut out = Vec::new();
                while let Some(name) = map.next_key::<String>()? {
                    let entry = if name == "__metadata__" {
                        RawEntry::Metadata(map.next_value()?)
                    } else {
                        let t: TensorEntry = map.next_value()?;
                        RawEntry::Tensor {
                            dtype: t.dtype,
                            shape: t.shape.0,
                            offsets: t.data_offsets,
                        }
                    };
                    out.push((name, entry));
                }
                Ok(RawHeader(out))
            }
        }
        d.deserialize_map(Entries)
    }
}

#[derive(serde::Deserialize)]
struct TensorEntry {
    dtype: String,
    shape: Shape,
    data_offsets: [u64; 2],
}

/// A shape, refused beyond [`MAX_DIMS`] before anything is allocated for the rest.
struct Shape(Vec<u64>);

impl<'de> serde::Deserialize<'de> for Shape {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct Dims;
        impl<'de> serde::de::Visitor<'de> for Dims {
            type Value = Shape;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                write!(f, "an array of at most {MAX_DIMS} dimensions")
            }
            fn visit_seq<A: serde::de::SeqAccess<'de>>(self, mut seq: A) -> Result<Shape, A::Error> {
                let mut dims = Vec::new();
                while let Some(d) = seq.next_element::<u64>()? {
                    if dims.len() == MAX_DIMS {
                        return Err(serde::de::Error::custom(format!(
                            "a shape has more than {MAX_DIMS} dimensions"
                        )));
                    }
                    dims.push(d);
                }
                Ok(Shape(dims))
            }
        }
        d.deserialize_seq(Dims)
    }
}

/// A tensor entry.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Tensor {
    /// Tensor name.
    pub name: String,
    /// dtype, e.g. `F16`.
    pub dtype: String,
    /// Shape.
    pub shape: Vec<u64>,
}

/// A parsed header.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Header {
    /// Tensors, sorted by name.
    pub tensors: Vec<Tensor>,
    /// `__metadata__`.
    pub metadata: BTreeMap<String, String>,
}

impl Header {
    /// Total element count.
    pub fn parameter_count(&self) -> u64 {
        self.tensors.iter().map(|t| t.shape.iter().product::<u64>()).sum()
    }

    /// Element count per dtype.
    pub fn dtype_counts(&self) -> BTreeMap<String, u64> {
        let mut counts = BTreeMap::new();
        for t in &self.tensors {
            *counts.entry(t.dtype.clone()).or_insert(0) += t.shape.iter().product::<u64>();
        }
        counts
    }

    /// The tensor named `name`.
    pub fn tensor(&self, name: &str) -> Option<&Tensor> {
        self.tensors
            .binary_search_by(|t| t.name.as_str().cmp(name))
            .ok()
            .map(|i| &self.tensors[i])
    }
}

/// Bytes per element of a dtype (None for an unknown dtype).
fn dtype_size(dtype: &str) -> Option<u64> {
    Some(match dtype {
        "BOOL" | "U8" | "I8" | "F8_E5M2" | "F8_E4M3" | "F8_E8M0" | "F8_E4M3FNUZ" | "F8_E5M2FNUZ" => 1,
        "I16" | "U16" | "F16" | "BF16" => 2,
        "I32" | "U32" | "F32" => 4,
        "F64" | "I64" | "U64" | "C64" => 8,
        _ => return None,
    })
}

/// Parses the header of a safetensors file of `file_size` bytes read from `reader`.
pub fn parse(reader: &mut impl Read, file_size: u64) -> Result<Header, String> {
    let mut len_bytes = [0u8; 8];
    reader
        .read_exact(&mut len_bytes)
        .map_err(|_| "file is shorter than the 8-byte header length".to_owned())?;
    let header_len = u64::from_le_bytes(len_bytes);
    if header_len > MAX_HEADER {
        return Err(format!(
            "header length {header_len} exceeds the {MAX_HEADER}-byte limit"
        ));
    }
    if header_len.saturating_add(8) > file_size {
        return Err(format!(
            "header length {header_len} runs past the end of the {file_size}-byte file"
        ));
    }
    let mut json = Vec::new();
    reader
        .take(header_len)
        .read_to_end(&mut json)
        .map_err(|e| format!("cannot read the header: {e}"))?;
    if json.len() as u64 != header_len {
        return Err("file ends inside the header".to_owned());
    }
    let raw: RawHeader =
        serde_json::from_slice(&json).map_err(|e| format!("header is not valid JSON of tensors: {e}"))?;
    drop(json);
    let data_len = file_size - 8 - header_len;
    let mut header = Header::default();
    let mut spans = Vec::new();
    for (name, entry) in raw.0 {
        let (dtype, shape, [begin, end]) = match entry {
            RawEntry::Metadata(meta) => {
                header.metadata = meta;
                continue;
            }
            RawEntry::Tensor {
                dtype,
                shape,
                offsets,
            } => (dtype, shape, offsets),
        };
        let size = dtype_size(&dtype).ok_or_else(|| format!("tensor {name}: unknown dtype {dtype}"))?;
        if begin > end {
            return Err(format!("tensor {name}: bad data_offsets"));
        }
        if end > data_len {
            return Err(format!(
                "tensor {name}: data ends at {end}, beyond the {data_len}-byte data buffer"
            ));
        }
        let elements = shape.iter().try_fold(1u64, |acc, d| acc.checked_mul(*d));
        let expected = elements.and_then(|n| n.checked_mul(size));
        if expected != Some(end - begin) {
            return Err(format!(
                "tensor {name}: {dtype} {shape:?} does not match its {} data bytes",
                end - begin
            ));
        }
        spans.push((begin, end));
        header.tensors.push(Tensor { name, dtype, shape });
    }
    spans.sort_unstable();
    let mut cursor = 0;
    for (begin, end) in spans {
        if begin != cursor {
            return Err(format!("tensor data has a gap or overlap at byte {begin}"));
        }
        cursor = end;
    }
    header.tensors.sort_by(|a, b| a.name.cmp(&b.name));
    Ok(header)
}

/// Writes a safetensors file with zeroed tensor data (tests and the bench generator).
pub fn write(
    out: &mut impl std::io::Write,
    tensors: &[(&str, &str, &[u64])],
    metadata: &[(&str, &str)],
) -> std::io::Result<()> {
    let mut object = serde_json::Map::new();
    if !metadata.is_empty() {
        let meta: serde_json::Map<String, Value> = metadata
            .iter()
            .map(|(k, v)| ((*k).to_owned(), Value::from(*v)))
            .collect();
        object.insert("__metadata__".to_owned(), Value::Object(meta));
    }
    let mut offset = 0u64;
    for (name, dtype, shape) in tensors {
        let bytes = shape.iter().product::<u64>() * dtype_size(dtype).unwrap_or(1);
        object.insert(
            (*name).to_owned(),
            serde_json::json!({"dtype": dtype, "shape": shape, "data_offsets": [offset, offset + bytes]}),
        );
        offset += bytes;
    }
    let mut json = serde_json::to_vec(&Value::Object(object))?;
    while (8 + json.len()) % 8 != 0 {
        json.push(b' ');
    }
    out.write_all(&(json.len() as u64).to_le_bytes())?;
    out.write_all(&json)?;
    std::io::copy(&mut std::io::repeat(0).take(offset), out)?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn bytes(tensors: &[(&str, &str, &[u64])], meta: &[(&str, &str)]) -> Vec<u8> {
        let mut v = Vec::new();
        write(&mut v, tensors, meta).expect("write");
        v
    }

    #[test]
    fn round_trip() {
        let file = bytes(
            &[("a.weight", "F32", &[2, 3]), ("b.bias", "F16", &[3])],
            &[("format", "pt")],
        );
        let header = parse(&mut file.as_slice(), file.len() as u64).expect("parse");
        assert_eq!(header.parameter_count(), 9);
        assert_eq!(header.metadata.get("format").map(String::as_str), Some("pt"));
        assert_eq!(header.tensor("b.bias").map(|t| t.shape.clone()), Some(vec![3]));
    }

    #[test]
    fn rejects_hostile_headers() {
        let mut huge = (u64::MAX).to_le_bytes().to_vec();
        huge.extend_from_slice(b"{}");
        assert!(
            parse(&mut huge.as_slice(), huge.len() as u64)
                .unwrap_err()
                .contains("limit")
        );
        let mut past = 1000u64.to_le_bytes().to_vec();
        past.extend_from_slice(b"{}");
        assert!(
            parse(&mut past.as_slice(), past.len() as u64)
                .unwrap_err()
                .contains("past the end")
        );
        let mut bad = 4u64.to_le_bytes().to_vec();
        bad.extend_from_slice(b"{{{{");
        assert!(
            parse(&mut bad.as_slice(), bad.len() as u64)
                .unwrap_err()
                .contains("JSON")
        );
        let mut file = bytes(&[("a", "F32", &[4])], &[]);
        file.truncate(file.len() - 4);
        assert!(
            parse(&mut file.as_slice(), file.len() as u64)
                .unwrap_err()
                .contains("beyond")
        );
        assert!(parse(&mut &b"abc"[..], 3).is_err());
    }
}
