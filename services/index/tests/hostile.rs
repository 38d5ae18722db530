//! Hostile input: the header readers and the page tokens never panic, whatever the bytes, and
//! hand-made hostile files are refused (not imported) within a fixed memory cap.

mod common;

use proptest::prelude::*;
use pumas_index::inspect::{gguf, pickle, safetensors};
use pumas_proto::common::v1::ImportMode;
use pumas_proto::index::v1::{GetServiceInfoRequest, ItemOutcome};

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

/// A zip archive of `(name, method, stored bytes, claimed uncompressed size)` entries, written
/// by hand so the directory can claim anything.
fn zip(entries: &[(&str, u16, u32, u32)]) -> Vec<u8> {
    let mut out = Vec::new();
    let mut directory = Vec::new();
    for &(name, method, stored, claimed) in entries {
        let offset = out.len() as u32;
        let mut fields = Vec::new();
        fields.extend_from_slice(&method.to_le_bytes());
        fields.extend_from_slice(&[0u8; 8]); // time, date, crc
        fields.extend_from_slice(&stored.to_le_bytes());
        fields.extend_from_slice(&claimed.to_le_bytes());
        fields.extend_from_slice(&(name.len() as u16).to_le_bytes());
        fields.extend_from_slice(&0u16.to_le_bytes()); // extra
        out.extend_from_slice(b"PK\x03\x04\x14\x00\x00\x00");
        out.extend_from_slice(&fields);
        out.extend_from_slice(name.as_bytes());
        out.extend(std::iter::repeat_n(0u8, stored as usize));
        directory.extend_from_slice(b"PK\x01\x02\x14\x00\x14\x00\x00\x00");
        directory.extend_from_slice(&fields);
        directory.extend_from_slice(&[0u8; 6]); // comment, disk, internal attributes
        directory.extend_from_slice(&0u32.to_le_bytes()); // external attributes
        directory.extend_from_slice(&offset.to_le_bytes());
        directory.extend_from_slice(name.as_bytes());
    }
    let at = out.len() as u32;
    out.extend_from_slice(&directory);
    out.extend_from_slice(b"PK\x05\x06\x00\x00\x00\x00");
    out.extend_from_slice(&(entries.len() as u16).to_le_bytes());
    out.extend_from_slice(&(entries.len() as u16).to_le_bytes());
    out.extend_from_slice(&(directory.len() as u32).to_le_bytes());
    out.extend_from_slice(&at.to_le_bytes());
    out.extend_from_slice(&0u16.to_le_bytes());
    out
}

fn check_pickle(bytes: &[u8], strict: bool) -> Result<(), String> {
    pickle::check(std::io::Cursor::new(bytes), bytes.len() as u64, strict)
}

#[test]
fn pytorch_containers_are_checked_from_their_directory() {
    // What torch.save writes: stored entries with a data.pkl.
    let torch = zip(&[
        ("archive/data.pkl", 0, 64, 64),
        ("archive/data/0", 0, 4096, 4096),
        ("archive/version", 0, 2, 2),
    ]);
    assert_eq!(check_pickle(&torch, true), Ok(()));
    assert_eq!(check_pickle(b"\x80\x02}q\x00.", true), Ok(()), "a legacy pickle");
    // A zip bomb: 4 KiB that claims 4 GiB.
    let bomb = zip(&[("archive/data.pkl", 8, 4096, u32::MAX - 1)]);
    assert!(check_pickle(&bomb, true).is_err_and(|e| e.contains("zip bomb")));
    let not_torch = zip(&[("readme.txt", 0, 10, 10)]);
    assert!(check_pickle(&not_torch, true).is_err_and(|e| e.contains("data.pkl")));
    let odd_method = zip(&[("archive/data.pkl", 99, 10, 10)]);
    assert!(check_pickle(&odd_method, true).is_err_and(|e| e.contains("method 99")));
    let mut truncated = torch.clone();
    truncated.truncate(torch.len() - 30);
    assert!(check_pickle(&truncated, true).is_err());
    assert!(check_pickle(b"ssh-rsa AAAAB3Nza me@host", true).is_err_and(|e| e.contains("neither")));
    // `.bin` is a name other formats use too: unknown bytes pass as unknown.
    assert_eq!(check_pickle(b"\x00\x01raw", false), Ok(()));
}

/// Each hostile file of the corpus, imported through the index service, ends FAILED with
/// INVALID_ARGUMENT, leaves nothing in the library, and the whole corpus costs the process
/// little memory.
#[tokio::test]
async fn the_hostile_corpus_is_refused_through_the_service_within_bounded_memory() {
    fn peak_rss_kib() -> u64 {
        std::fs::read_to_string("/proc/self/status")
            .ok()
            .and_then(|s| {
                s.lines()
                    .find_map(|l| {
                        l.strip_prefix("VmHWM:")
                            .map(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
                    })
                    .flatten()
            })
            .unwrap_or(0)
    }
    let tmp = tempfile::tempdir().expect("tempdir");
    let inbox = tmp.path().join("inbox");
    std::fs::create_dir_all(&inbox).expect("inbox");
    let mut huge_count = b"GGUF\x03\x00\x00\x00".to_vec();
    huge_count.extend_from_slice(&(1u64 << 62).to_le_bytes());
    huge_count.extend_from_slice(&(1u64 << 62).to_le_bytes());
    let corpus: Vec<(&str, Vec<u8>)> = vec![
        ("nested-arrays.gguf", nested_gguf(4, 64)),
        ("huge-counts.gguf", huge_count),
        ("truncated.safetensors", 500u64.to_le_bytes().to_vec()),
        ("header-claims-100gb.safetensors", {
            let mut b = (100u64 << 30).to_le_bytes().to_vec();
            b.extend_from_slice(b"{\"a\":");
            b
        }),
        ("zip-bomb.pt", zip(&[("archive/data.pkl", 8, 4096, u32::MAX - 1)])),
        ("not-a-checkpoint.ckpt", zip(&[("payload.sh", 0, 64, 64)])),
        (
            "id_rsa.pth",
            b"-----BEGIN OPENSSH PRIVATE KEY-----\nb3BlbnNzaC1rZXktdjEAAAAA\n".to_vec(),
        ),
    ];
    let paths: Vec<std::path::PathBuf> = corpus
        .iter()
        .map(|(name, bytes)| {
            let path = inbox.join(name);
            std::fs::write(&path, bytes).expect("write");
            path
        })
        .collect();
    let mut server = common::Server::start(&tmp.path().join("root"), Default::default()).await;
    let before = peak_rss_kib();
    for path in &paths {
        let job = server.import(&[path.as_path()], ImportMode::Move).await;
        assert_eq!(job.results.len(), 1, "{job:?}");
        let item = &job.results[0];
        assert_eq!(
            item.outcome,
            ItemOutcome::Failed as i32,
            "{}: {item:?}",
            path.display()
        );
        let error = item.error.as_ref().expect("an error");
        assert_eq!(
            error.code,
            tonic::Code::InvalidArgument as i32,
            "{}: {error:?}",
            path.display()
        );
        assert_eq!(error.reason, "INVALID_ARGUMENT");
        assert!(
            path.exists(),
            "a refused MOVE leaves the file where it was: {}",
            path.display()
        );
    }
    let grew_mib = peak_rss_kib().saturating_sub(before) / 1024;
    assert!(grew_mib < 96, "the corpus raised peak memory by {grew_mib} MiB");
    let info = server
        .client
        .get_service_info(GetServiceInfoRequest {})
        .await
        .expect("info")
        .into_inner();
    assert_eq!(info.model_count, 0);
    let staging = server.models().join(".staging");
    let left = std::fs::read_dir(&staging).map(|d| d.count()).unwrap_or(0);
    assert_eq!(left, 0, "nothing left in staging");
    // A real checkpoint next to them still comes in (flagged unsafe, not refused).
    let good = inbox.join("good.pt");
    std::fs::write(
        &good,
        zip(&[("archive/data.pkl", 0, 64, 64), ("archive/data/0", 0, 4096, 4096)]),
    )
    .expect("write");
    let job = server.import(&[good.as_path()], ImportMode::Copy).await;
    assert_eq!(job.results[0].outcome, ItemOutcome::Added as i32, "{job:?}");
    server.stop().await;
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

    /// Any bytes after a zip or pickle opening: accepted or refused, never a panic.
    #[test]
    fn checkpoint_check_never_panics(
        head in prop_oneof![Just(b"PK\x03\x04".to_vec()), Just(b"\x80\x02".to_vec()), Just(Vec::new())],
        body in proptest::collection::vec(any::<u8>(), 0..512),
        tail in prop_oneof![Just(Vec::new()), Just(b"PK\x05\x06".to_vec()), Just(b"PK\x06\x07\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00PK\x05\x06".to_vec())],
        tail_body in proptest::collection::vec(any::<u8>(), 0..24),
    ) {
        let mut file = head;
        file.extend_from_slice(&body);
        file.extend_from_slice(&tail);
        file.extend_from_slice(&tail_body);
        let _ = check_pickle(&file, true);
    }
}
