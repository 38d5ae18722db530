//! Hostile input: the header readers and the page tokens never panic, whatever the bytes, and
//! hand-made hostile files are refused (not imported) within a fixed memory cap.

use proptest::prelude::*;
use pumas_index::inspect::{gguf, safetensors};

/// A GGUF v3 header with one key whose value is an array of arrays `depth` deep, `width`
/// items per level, of u8 leaves (a few bytes of file, millions of values once built).
fn nested_gguf(depth: u32, width: u64) -> Vec<u8> {
    fn array(out: &mut Vec<u8>, depth: u32, width: u64) {
        if depth == 0 {
            out.extend_from_slice(&0u32.to_le_bytes()); // u8 leaves
            out.extend_from_slice(&width.to_le_bytes());
            out.extend(std::iter::repeat_n(7u8, width as usize));
            return;
        }
        out.extend_from_slice(&9u32.to_le_bytes()); // array of arrays
        out.extend_from_slice(&width.to_le_bytes());
        for _ in 0..width {
            array(out, depth - 1, width);
        }
    }
    let mut out = b"GGUF".to_vec();
    out.extend_from_slice(&3u32.to_le_bytes());
    out.extend_from_slice(&0u64.to_le_bytes()); // tensors
    out.extend_from_slice(&1u64.to_le_bytes()); // one key
    let key = b"general.nested";
    out.extend_from_slice(&(key.len() as u64).to_le_bytes());
    out.extend_from_slice(key);
    out.extend_from_slice(&9u32.to_le_bytes());
    array(&mut out, depth - 1, width);
    out
}

/// The shape the issue reported: 4 levels of 64 (a 17 MiB file, 16.7 million values): refused.
#[test]
fn a_deeply_nested_gguf_array_is_refused_within_the_cap() {
    let file = nested_gguf(4, 64);
    let err = gguf::parse(file.as_slice(), file.len() as u64).expect_err("refused");
    assert!(err.contains("memory") || err.contains("deep"), "{err}");
}

/// Too deep: refused whatever the width.
#[test]
fn arrays_nested_past_the_limit_are_refused() {
    let file = nested_gguf(6, 1);
    let err = gguf::parse(file.as_slice(), file.len() as u64).expect_err("refused");
    assert!(err.contains("deep"), "{err}");
}

/// A long array of long arrays is skipped without building it.
#[test]
fn long_arrays_are_skipped_not_built() -> Result<(), String> {
    let file = nested_gguf(2, 2000);
    let header = gguf::parse(file.as_slice(), file.len() as u64)?;
    assert_eq!(
        header.metadata.get("general.nested"),
        Some(&gguf::Value::SkippedArray(2000))
    );
    Ok(())
}

/// Counts that the file cannot hold are refused before anything is allocated for them.
#[test]
fn impossible_gguf_counts_are_refused() {
    for (tensors, keys) in [(u64::MAX, 0), (0, u64::MAX), (1 << 40, 1)] {
        let mut file = b"GGUF".to_vec();
        file.extend_from_slice(&3u32.to_le_bytes());
        file.extend_from_slice(&tensors.to_le_bytes());
        file.extend_from_slice(&keys.to_le_bytes());
        assert!(gguf::parse(file.as_slice(), file.len() as u64).is_err());
    }
}

/// A safetensors header with a shape of a million dimensions is refused.
#[test]
fn a_safetensors_shape_of_a_million_dimensions_is_refused() {
    let dims = vec!["1"; 1_000_000].join(",");
    let json = format!(r#"{{"t":{{"dtype":"F16","shape":[{dims}],"data_offsets":[0,2]}}}}"#);
    let mut file = (json.len() as u64).to_le_bytes().to_vec();
    file.extend_from_slice(json.as_bytes());
    file.extend_from_slice(&[0, 0]);
    let err = safetensors::parse(&mut file.as_slice(), file.len() as u64).expect_err("refused");
    assert!(err.contains("dimensions"), "{err}");
}

/// A header longer than the cap is refused before it is read.
#[test]
fn a_safetensors_header_past_the_cap_is_refused() {
    let mut file = (safetensors::MAX_HEADER + 1).to_le_bytes().to_vec();
    file.extend_from_slice(b"{}");
    let err = safetensors::parse(&mut file.as_slice(), u64::MAX).expect_err("refused");
    assert!(err.contains("limit"), "{err}");
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(10_000))]

    /// Any bytes after the GGUF magic: a header or a refusal, never a panic.
    #[test]
    fn gguf_reader_never_panics(tail in proptest::collection::vec(any::<u8>(), 0..512), claimed in any::<u64>()) {
        let mut file = b"GGUF\x03\x00\x00\x00".to_vec();
        file.extend_from_slice(&tail);
        let _ = gguf::parse(file.as_slice(), claimed);
        let _ = gguf::parse(file.as_slice(), file.len() as u64);
    }

    /// Structured GGUF headers with random counts, types and lengths.
    #[test]
    fn gguf_reader_never_panics_on_structured_headers(
        tensors in 0u64..8, keys in 0u64..8,
        entries in proptest::collection::vec((any::<u64>(), 0u32..14, proptest::collection::vec(any::<u8>(), 0..24)), 0..8),
    ) {
        let mut file = b"GGUF\x03\x00\x00\x00".to_vec();
        file.extend_from_slice(&tensors.to_le_bytes());
        file.extend_from_slice(&keys.to_le_bytes());
        for (len, value_type, body) in entries {
            file.extend_from_slice(&(len % 32).to_le_bytes());
            file.extend_from_slice(&body);
            file.extend_from_slice(&value_type.to_le_bytes());
        }
        let _ = gguf::parse(file.as_slice(), file.len() as u64);
    }

    /// Any safetensors bytes: a header or a refusal, never a panic.
    #[test]
    fn safetensors_reader_never_panics(body in proptest::collection::vec(any::<u8>(), 0..512)) {
        let mut file = (body.len() as u64).to_le_bytes().to_vec();
        file.extend_from_slice(&body);
        let _ = safetensors::parse(&mut file.as_slice(), file.len() as u64 + 64);
    }

    /// JSON-shaped safetensors headers with random offsets, shapes and dtypes.
    #[test]
    fn safetensors_reader_never_panics_on_json(
        dtype in "(F16|BF16|F32|I8|U8|F64|XX)",
        shape in proptest::collection::vec(any::<u64>(), 0..6),
        begin in any::<u64>(), end in any::<u64>(), data in 0u64..4096,
    ) {
        let json = serde_json::json!({
            "__metadata__": {"format": "pt"},
            "w": {"dtype": dtype, "shape": shape, "data_offsets": [begin, end]},
        }).to_string();
        let mut file = (json.len() as u64).to_le_bytes().to_vec();
        file.extend_from_slice(json.as_bytes());
        let _ = safetensors::parse(&mut file.as_slice(), file.len() as u64 + data);
    }
}
