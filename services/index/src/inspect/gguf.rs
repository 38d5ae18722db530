//! GGUF (v2/v3) header parser: metadata key/values and tensor infos. Bounded: every count and
//! length from the file is checked before anything is allocated from it, large arrays (the
//! tokenizer vocabulary) and everything inside them are skipped without being built, and what
//! is kept is charged against [`MEMORY_CAP`], so no file, whatever it claims, costs more.

use std::collections::BTreeMap;
use std::io::Read;

/// Longest string we accept (key or value).
const MAX_STRING: u64 = 16 * 1024 * 1024;
/// Most metadata entries / tensors / array elements we accept.
const MAX_COUNT: u64 = 64 * 1024 * 1024;
/// Arrays longer than this are skipped rather than kept.
const KEEP_ARRAY: u64 = 64;
/// Arrays nest at most this deep.
const MAX_DEPTH: u32 = 4;
/// Most memory the kept metadata and tensor infos of one file may take; a header that needs
/// more is refused.
pub const MEMORY_CAP: u64 = 64 * 1024 * 1024;

/// A metadata value (arrays are kept only when short).
#[derive(Clone, Debug, PartialEq)]
pub enum Value {
    /// Any integer type.
    Int(i128),
    /// f32 / f64.
    Float(f64),
    /// Bool.
    Bool(bool),
    /// String.
    Str(String),
    /// A short array.
    Array(Vec<Value>),
    /// A long array, skipped: its element count.
    SkippedArray(u64),
}

impl Value {
    /// As a string, when it is one.
    pub fn as_str(&self) -> Option<&str> {
        match self {
            Value::Str(s) => Some(s),
            _ => None,
        }
    }

    /// As an integer, when it is one.
    pub fn as_int(&self) -> Option<i128> {
        match self {
            Value::Int(i) => Some(*i),
            _ => None,
        }
    }
}

/// A tensor info.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TensorInfo {
    /// Name.
    pub name: String,
    /// Dimensions (innermost first).
    pub dims: Vec<u64>,
    /// ggml type id.
    pub ggml_type: u32,
}

/// A parsed GGUF header.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Header {
    /// Format version.
    pub version: u32,
    /// Metadata.
    pub metadata: BTreeMap<String, Value>,
    /// Tensor infos.
    pub tensors: Vec<TensorInfo>,
}

impl Header {
    /// `general.architecture`.
    pub fn architecture(&self) -> Option<&str> {
        self.metadata.get("general.architecture").and_then(Value::as_str)
    }

    /// `general.name`.
    pub fn name(&self) -> Option<&str> {
        self.metadata.get("general.name").and_then(Value::as_str)
    }

    /// Total element count over all tensors.
    pub fn parameter_count(&self) -> u64 {
        self.tensors.iter().map(|t| t.dims.iter().product::<u64>()).sum()
    }

    /// The quantization name from `general.file_type`.
    pub fn quantization(&self) -> Option<&'static str> {
        let file_type = self.metadata.get("general.file_type").and_then(Value::as_int)?;
        Some(match file_type {
            0 => "F32",
            1 => "F16",
            2 => "Q4_0",
            3 => "Q4_1",
            7 => "Q8_0",
            8 => "Q5_0",
            9 => "Q5_1",
            10 => "Q2_K",
            11 => "Q3_K_S",
            12 => "Q3_K_M",
            13 => "Q3_K_L",
            14 => "Q4_K_S",
            15 => "Q4_K_M",
            16 => "Q5_K_S",
            17 => "Q5_K_M",
            18 => "Q6_K",
            19 => "IQ2_XXS",
            20 => "IQ2_XS",
            21 => "Q2_K_S",
            22 => "IQ3_XS",
            23 => "IQ3_XXS",
            24 => "IQ1_S",
            25 => "IQ4_NL",
            26 => "IQ3_S",
            27 => "IQ3_M",
            28 => "IQ2_S",
            29 => "IQ2_M",
            30 => "IQ4_XS",
            31 => "IQ1_M",
            32 => "BF16",
            36 => "TQ1_0",
            37 => "TQ2_0",
            38 => "MXFP4_MOE",
            _ => return None,
        })
    }
}

struct Cursor<R> {
    reader: R,
    read: u64,
    file_size: u64,
    /// Bytes of memory the kept values take so far.
    kept: u64,
}

impl<R: Read> Cursor<R> {
    fn bytes<const N: usize>(&mut self) -> Result<[u8; N], String> {
        let mut buf = [0u8; N];
        self.reader
            .read_exact(&mut buf)
            .map_err(|_| format!("file ends inside the header at byte {}", self.read))?;
        self.read += N as u64;
        Ok(buf)
    }
    fn u32(&mut self) -> Result<u32, String> {
        Ok(u32::from_le_bytes(self.bytes()?))
    }
    fn u64(&mut self) -> Result<u64, String> {
        Ok(u64::from_le_bytes(self.bytes()?))
    }
    fn count(&mut self, what: &str) -> Result<u64, String> {
        let n = self.u64()?;
        // Every element takes at least one byte, so a count larger than what is left is a lie.
        if n > MAX_COUNT || n > self.file_size.saturating_sub(self.read) {
            return Err(format!(
                "{what} count {n} is impossible for a {}-byte file",
                self.file_size
            ));
        }
        Ok(n)
    }
    /// Counts `bytes` of memory against the cap.
    fn charge(&mut self, bytes: u64) -> Result<(), String> {
        self.kept = self.kept.saturating_add(bytes);
        if self.kept > MEMORY_CAP {
            return Err(format!(
                "the header needs more than {} MiB of memory to read; refusing it",
                MEMORY_CAP >> 20
            ));
        }
        Ok(())
    }
    /// A string length, checked against the file.
    fn string_len(&mut self) -> Result<u64, String> {
        let len = self.u64()?;
        if len > MAX_STRING || len > self.file_size.saturating_sub(self.read) {
            return Err(format!("string length {len} at byte {} is impossible", self.read));
        }
        Ok(len)
    }
    fn string(&mut self) -> Result<String, String> {
        let len = self.u64()?;
        if len > MAX_STRING || len > self.file_size.saturating_sub(self.read) {
            return Err(format!("string length {len} at byte {} is impossible", self.read));
        }
        let mut buf = Vec::with_capacity(len as usize);
        (&mut self.reader)
            .take(len)
            .read_to_end(&mut buf)
            .map_err(|e| e.to_string())?;
        if buf.len() as u64 != len {
            return Err("file ends inside a string".to_owned());
        }
        self.read += len;
        String::from_utf8(buf).map_err(|_| format!("string at byte {} is not UTF-8", self.read))
    }
    fn skip(&mut self, n: u64) -> Result<(), String> {
        let copied = std::io::copy(&mut (&mut self.reader).take(n), &mut std::io::sink())
            .map_err(|e| e.to_string())?;
        if copied != n {
            return Err("file ends inside the header".to_owned());
        }
        self.read += n;
        Ok(())
    }
    /// Reads a value and keeps it (charged against the cap).
    fn value(&mut self, value_type: u32, depth: u32) -> Result<Value, String> {
        self.charge(std::mem::size_of::<Value>() as u64)?;
        Ok(match value_type {
            0 => Value::Int(i128::from(self.bytes::<1>()?[0])),
            1 => Value::Int(i128::from(i8::from_le_bytes(self.bytes()?))),
            2 => Value::Int(i128::from(u16::from_le_bytes(self.bytes()?))),
            3 => Value::Int(i128::from(i16::from_le_bytes(self.bytes()?))),
            4 => Value::Int(i128::from(self.u32()?)),
            5 => Value::Int(i128::from(i32::from_le_bytes(self.bytes()?))),
            6 => Value::Float(f64::from(f32::from_le_bytes(self.bytes()?))),
            7 => Value::Bool(self.bytes::<1>()?[0] != 0),
            8 => {
                let text = self.string()?;
                self.charge(text.len() as u64)?;
                Value::Str(text)
            }
            9 => {
                if depth >= MAX_DEPTH {
                    return Err("arrays nested too deep".to_owned());
                }
                let elem_type = self.u32()?;
                let count = self.count("array")?;
                if count > KEEP_ARRAY {
                    match fixed_size(elem_type) {
                        Some(size) => self.skip(count.checked_mul(size).ok_or("array too large")?)?,
                        None => (0..count).try_for_each(|_| self.skip_value(elem_type, depth + 1))?,
                    }
                    Value::SkippedArray(count)
                } else {
                    let mut items = Vec::with_capacity(count as usize);
                    for _ in 0..count {
                        items.push(self.value(elem_type, depth + 1)?);
                    }
                    Value::Array(items)
                }
            }
            10 => Value::Int(i128::from(self.u64()?)),
            11 => Value::Int(i128::from(i64::from_le_bytes(self.bytes()?))),
            12 => Value::Float(f64::from_le_bytes(self.bytes()?)),
            other => return Err(format!("unknown metadata value type {other}")),
        })
    }

    /// Reads past a value without building it.
    fn skip_value(&mut self, value_type: u32, depth: u32) -> Result<(), String> {
        if let Some(size) = fixed_size(value_type) {
            return self.skip(size);
        }
        match value_type {
            8 => {
                let len = self.string_len()?;
                self.skip(len)
            }
            9 => {
                if depth >= MAX_DEPTH {
                    return Err("arrays nested too deep".to_owned());
                }
                let elem_type = self.u32()?;
                let count = self.count("array")?;
                match fixed_size(elem_type) {
                    Some(size) => self.skip(count.checked_mul(size).ok_or("array too large")?),
                    None => (0..count).try_for_each(|_| self.skip_value(elem_type, depth + 1)),
                }
            }
            other => Err(format!("unknown metadata value type {other}")),
        }
    }
}

/// Bytes of a fixed-size value type (None for strings, arrays and unknown types).
fn fixed_size(value_type: u32) -> Option<u64> {
    match value_type {
        0 | 1 | 7 => Some(1),
        2 | 3 => Some(2),
        4..=6 => Some(4),
        10..=12 => Some(8),
        _ => None,
    }
}

/// Parses the header of a GGUF file of `file_size` bytes.
pub fn parse(reader: impl Read, file_size: u64) -> Result<Header, String> {
    let mut c = Cursor {
        reader,
        read: 0,
        file_size,
        kept: 0,
    };
    let magic = c.bytes::<4>()?;
    if &magic != b"GGUF" {
        return Err("not a GGUF file (bad magic)".to_owned());
    }
    let version = c.u32()?;
    if !(2..=3).contains(&version) {
        return Err(format!("GGUF version {version} is not supported (2 and 3 are)"));
    }
    let tensor_count = c.count("tensor")?;
    let kv_count = c.count("metadata")?;
    let mut header = Header {
        version,
        ..Header::default()
    };
    for _ in 0..kv_count {
        let key = c.string()?;
        c.charge(key.len() as u64 + 48)?;
        let value_type = c.u32()?;
        let value = c.value(value_type, 0)?;
        header.metadata.insert(key, value);
    }
    for _ in 0..tensor_count {
        let name = c.string()?;
        c.charge((name.len() + std::mem::size_of::<TensorInfo>() + 4 * 8) as u64)?;
        let n_dims = c.u32()?;
        if n_dims > 4 {
            return Err(format!("tensor {name} has {n_dims} dimensions (at most 4)"));
        }
        let mut dims = Vec::with_capacity(n_dims as usize);
        for _ in 0..n_dims {
            dims.push(c.u64()?);
        }
        let ggml_type = c.u32()?;
        let _offset = c.u64()?;
        header.tensors.push(TensorInfo {
            name,
            dims,
            ggml_type,
        });
    }
    Ok(header)
}

/// Writes a small GGUF v3 file (tests and the bench generator): string/u32 metadata and F32
/// tensors with zeroed data.
pub fn write(
    out: &mut impl std::io::Write,
    metadata: &[(&str, MetaValue<'_>)],
    tensors: &[(&str, &[u64])],
) -> std::io::Result<()> {
    fn string(out: &mut impl std::io::Write, s: &str) -> std::io::Result<()> {
        out.write_all(&(s.len() as u64).to_le_bytes())?;
        out.write_all(s.as_bytes())
    }
    let mut head = Vec::new();
    head.extend_from_slice(b"GGUF");
    head.extend_from_slice(&3u32.to_le_bytes());
    head.extend_from_slice(&(tensors.len() as u64).to_le_bytes());
    head.extend_from_slice(&(metadata.len() as u64).to_le_bytes());
    for (key, value) in metadata {
        string(&mut head, key)?;
        match value {
            MetaValue::Str(s) => {
                head.extend_from_slice(&8u32.to_le_bytes());
                string(&mut head, s)?;
            }
            MetaValue::U32(v) => {
                head.extend_from_slice(&4u32.to_le_bytes());
                head.extend_from_slice(&v.to_le_bytes());
            }
            MetaValue::Strings(items) => {
                head.extend_from_slice(&9u32.to_le_bytes());
                head.extend_from_slice(&8u32.to_le_bytes());
                head.extend_from_slice(&(items.len() as u64).to_le_bytes());
                for item in *items {
                    string(&mut head, item)?;
                }
            }
        }
    }
    let mut offset = 0u64;
    for (name, dims) in tensors {
        string(&mut head, name)?;
        head.extend_from_slice(&(dims.len() as u32).to_le_bytes());
        for d in *dims {
            head.extend_from_slice(&d.to_le_bytes());
        }
        head.extend_from_slice(&0u32.to_le_bytes());
        head.extend_from_slice(&offset.to_le_bytes());
        offset += (dims.iter().product::<u64>() * 4).div_ceil(32) * 32;
    }
    while head.len() % 32 != 0 {
        head.push(0);
    }
    out.write_all(&head)?;
    std::io::copy(&mut std::io::repeat(0).take(offset), out)?;
    Ok(())
}

/// A metadata value for [`write`].
#[derive(Clone, Copy, Debug)]
pub enum MetaValue<'a> {
    /// A string.
    Str(&'a str),
    /// A u32.
    U32(u32),
    /// An array of strings.
    Strings(&'a [&'a str]),
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_with_a_long_vocabulary() {
        let vocab: Vec<String> = (0..1000).map(|i| format!("tok{i}")).collect();
        let vocab: Vec<&str> = vocab.iter().map(String::as_str).collect();
        let mut file = Vec::new();
        write(
            &mut file,
            &[
                ("general.architecture", MetaValue::Str("llama")),
                ("general.name", MetaValue::Str("Tiny Llama")),
                ("general.file_type", MetaValue::U32(15)),
                ("tokenizer.ggml.tokens", MetaValue::Strings(&vocab)),
            ],
            &[("token_embd.weight", &[64, 100]), ("output_norm.weight", &[64])],
        )
        .expect("write");
        let header = parse(file.as_slice(), file.len() as u64).expect("parse");
        assert_eq!(header.architecture(), Some("llama"));
        assert_eq!(header.name(), Some("Tiny Llama"));
        assert_eq!(header.quantization(), Some("Q4_K_M"));
        assert_eq!(header.parameter_count(), 6464);
        assert_eq!(
            header.metadata.get("tokenizer.ggml.tokens"),
            Some(&Value::SkippedArray(1000))
        );
    }

    #[test]
    fn rejects_hostile_headers() {
        assert!(parse(&b"GGUX\x03\0\0\0"[..], 8).unwrap_err().contains("magic"));
        let mut lying = b"GGUF".to_vec();
        lying.extend_from_slice(&3u32.to_le_bytes());
        lying.extend_from_slice(&u64::MAX.to_le_bytes());
        lying.extend_from_slice(&0u64.to_le_bytes());
        assert!(
            parse(lying.as_slice(), lying.len() as u64)
                .unwrap_err()
                .contains("impossible")
        );
        let mut long_key = b"GGUF".to_vec();
        long_key.extend_from_slice(&3u32.to_le_bytes());
        long_key.extend_from_slice(&0u64.to_le_bytes());
        long_key.extend_from_slice(&1u64.to_le_bytes());
        long_key.extend_from_slice(&(1u64 << 40).to_le_bytes());
        assert!(
            parse(long_key.as_slice(), long_key.len() as u64)
                .unwrap_err()
                .contains("impossible")
        );
        assert!(parse(&b"GGUF"[..], 4).is_err());
    }
}
