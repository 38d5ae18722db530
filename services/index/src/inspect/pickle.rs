//! PyTorch checkpoints (`.pt`, `.pth`, `.ckpt`, `.bin`, `.pkl`) are never unpickled: that could
//! run code. What is checked is the container, from its directory alone and within a fixed
//! read budget: a zip archive must be a PyTorch archive (it has a `data.pkl`) whose entries do
//! not expand far beyond the file (a zip bomb posing as a checkpoint is refused); otherwise the
//! file must start like a pickle.

use std::io::{Read, Seek, SeekFrom};

/// Largest central directory read.
const MAX_DIRECTORY: u64 = 16 << 20;
/// Most entries in an archive.
const MAX_ENTRIES: u64 = 1_000_000;
/// An entry may expand to this many times its stored size (PyTorch stores entries
/// uncompressed; a deflated one compresses weights by a few percent at most).
const MAX_RATIO: u64 = 20;
/// What every entry may expand to regardless of the ratio (small pickles compress well).
const SMALL_ENTRY: u64 = 1 << 20;

/// Checks a checkpoint container. `must_be_checkpoint` is false for `.bin`, a name other
/// formats use too: such a file that is neither a zip nor a pickle is let through as unknown.
pub fn check(mut file: impl Read + Seek, size: u64, must_be_checkpoint: bool) -> Result<(), String> {
    let mut magic = [0u8; 4];
    let got = read_up_to(&mut file, &mut magic)?;
    if got == 4 && &magic == b"PK\x03\x04" {
        return check_zip(file, size);
    }
    // Pickle protocol 2..5 opens with PROTO (0x80) and its number: PyTorch's legacy format.
    if got >= 2 && magic[0] == 0x80 && (2..=5).contains(&magic[1]) {
        return Ok(());
    }
    if must_be_checkpoint {
        return Err("neither a PyTorch zip archive nor a pickle (it does not start like either)".to_owned());
    }
    Ok(())
}

fn read_up_to(file: &mut impl Read, buf: &mut [u8]) -> Result<usize, String> {
    let mut filled = 0;
    while filled < buf.len() {
        match file.read(&mut buf[filled..]) {
            Ok(0) => break,
            Ok(n) => filled += n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => return Err(format!("cannot read: {e}")),
        }
    }
    Ok(filled)
}

fn u16_at(b: &[u8], at: usize) -> Option<u64> {
    b.get(at..at + 2)
        .map(|s| u64::from(u16::from_le_bytes([s[0], s[1]])))
}

fn u32_at(b: &[u8], at: usize) -> Option<u64> {
    b.get(at..at + 4)
        .map(|s| u64::from(u32::from_le_bytes([s[0], s[1], s[2], s[3]])))
}

fn u64_at(b: &[u8], at: usize) -> Option<u64> {
    let s = b.get(at..at + 8)?;
    let mut a = [0u8; 8];
    a.copy_from_slice(s);
    Some(u64::from_le_bytes(a))
}

fn read_at(file: &mut (impl Read + Seek), offset: u64, len: u64) -> Result<Vec<u8>, String> {
    file.seek(SeekFrom::Start(offset))
        .map_err(|e| format!("cannot seek: {e}"))?;
    let mut buf = vec![0u8; len as usize];
    let got = read_up_to(file, &mut buf)?;
    if got as u64 != len {
        return Err("the archive is truncated".to_owned());
    }
    Ok(buf)
}

fn check_zip(mut file: impl Read + Seek, size: u64) -> Result<(), String> {
    // The end-of-directory record sits in the last 22 bytes plus a comment of up to 64 KiB.
    let tail_len = size.min(22 + 65_535);
    let tail = read_at(&mut file, size - tail_len, tail_len)?;
    let eocd = (0..tail.len().saturating_sub(21))
        .rev()
        .find(|&i| tail[i..].starts_with(b"PK\x05\x06"))
        .ok_or("a zip archive without its directory (truncated?)")?;
    let mut entries = u16_at(&tail, eocd + 10).unwrap_or(0);
    let mut dir_size = u32_at(&tail, eocd + 12).unwrap_or(0);
    let mut dir_offset = u32_at(&tail, eocd + 16).unwrap_or(0);
    if entries == 0xFFFF || dir_size == 0xFFFF_FFFF || dir_offset == 0xFFFF_FFFF {
        // Zip64: a locator right before the record points at the 64-bit record.
        let locator = eocd
            .checked_sub(20)
            .ok_or("a zip64 archive without its locator")?;
        if !tail[locator..].starts_with(b"PK\x06\x07") {
            return Err("a zip64 archive without its locator".to_owned());
        }
        let record_at = u64_at(&tail, locator + 8).ok_or("a truncated zip64 locator")?;
        if record_at.saturating_add(56) > size {
            return Err("the zip64 record lies past the end of the file".to_owned());
        }
        let record = read_at(&mut file, record_at, 56)?;
        if !record.starts_with(b"PK\x06\x06") {
            return Err("a broken zip64 record".to_owned());
        }
        entries = u64_at(&record, 32).unwrap_or(u64::MAX);
        dir_size = u64_at(&record, 40).unwrap_or(u64::MAX);
        dir_offset = u64_at(&record, 48).unwrap_or(u64::MAX);
    }
    if entries > MAX_ENTRIES {
        return Err(format!(
            "the archive claims {entries} entries (at most {MAX_ENTRIES})"
        ));
    }
    if dir_size > MAX_DIRECTORY || dir_offset.saturating_add(dir_size) > size {
        return Err("the archive's directory is larger than the file or than 16 MiB".to_owned());
    }
    let dir = read_at(&mut file, dir_offset, dir_size)?;
    let mut at = 0usize;
    let mut total: u64 = 0;
    let mut has_pickle = false;
    for _ in 0..entries {
        if !dir.get(at..).is_some_and(|d| d.starts_with(b"PK\x01\x02")) {
            return Err("the archive's directory is broken".to_owned());
        }
        let (
            Some(method),
            Some(mut packed),
            Some(mut unpacked),
            Some(name_len),
            Some(extra_len),
            Some(comment_len),
        ) = (
            u16_at(&dir, at + 10),
            u32_at(&dir, at + 20),
            u32_at(&dir, at + 24),
            u16_at(&dir, at + 28),
            u16_at(&dir, at + 30),
            u16_at(&dir, at + 32),
        )
        else {
            return Err("the archive's directory is truncated".to_owned());
        };
        let name_at = at + 46;
        let extra_at = name_at + name_len as usize;
        let end = extra_at + extra_len as usize + comment_len as usize;
        let name = dir
            .get(name_at..extra_at)
            .ok_or("the archive's directory is truncated")?;
        let extra = dir
            .get(extra_at..extra_at + extra_len as usize)
            .ok_or("the archive's directory is truncated")?;
        if unpacked == 0xFFFF_FFFF || packed == 0xFFFF_FFFF {
            (unpacked, packed) = zip64_sizes(extra, unpacked, packed)?;
        }
        if method != 0 && method != 8 {
            return Err(format!(
                "an archive entry uses compression method {method} (PyTorch stores entries as is)"
            ));
        }
        if unpacked > packed.saturating_mul(MAX_RATIO).saturating_add(SMALL_ENTRY) {
            return Err(format!(
                "an archive entry expands from {packed} to {unpacked} bytes: a zip bomb, not a checkpoint"
            ));
        }
        total = total.saturating_add(unpacked);
        has_pickle |= name.ends_with(b"data.pkl");
        at = end;
    }
    if total > size.saturating_mul(MAX_RATIO).saturating_add(SMALL_ENTRY) {
        return Err(format!(
            "the archive expands to {total} bytes from {size}: a zip bomb, not a checkpoint"
        ));
    }
    if !has_pickle {
        return Err("a zip archive but not a PyTorch checkpoint (it has no data.pkl)".to_owned());
    }
    Ok(())
}

/// The 64-bit sizes of an entry from its zip64 extra field.
fn zip64_sizes(extra: &[u8], unpacked: u64, packed: u64) -> Result<(u64, u64), String> {
    let mut at = 0;
    while let (Some(id), Some(len)) = (u16_at(extra, at), u16_at(extra, at + 2)) {
        let body = extra
            .get(at + 4..at + 4 + len as usize)
            .ok_or("a truncated zip64 field")?;
        if id == 1 {
            let mut pos = 0;
            let mut next = |value: u64| -> Result<u64, String> {
                if value != 0xFFFF_FFFF {
                    return Ok(value);
                }
                let v = u64_at(body, pos).ok_or("a truncated zip64 field")?;
                pos += 8;
                Ok(v)
            };
            let unpacked = next(unpacked)?;
            let packed = next(packed)?;
            return Ok((unpacked, packed));
        }
        at += 4 + len as usize;
    }
    Err("an archive entry's sizes are missing (zip64 field absent)".to_owned())
}
