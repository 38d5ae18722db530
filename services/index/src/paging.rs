//! Opaque page tokens: a keyset cursor plus a hash of the query they belong to, so a token
//! replayed with other filters is refused instead of returning a wrong page.

use serde::{Deserialize, Serialize};

use crate::error::IndexError;
use crate::store::After;

#[derive(Serialize, Deserialize)]
struct Token {
    /// Hash of the query, filters and order.
    q: String,
    /// Cursor kind: t(ext), i(nt), k (relevance score and rowid).
    k: char,
    /// Cursor value.
    v: String,
    /// Last id.
    id: String,
}

/// A short hash of everything that defines a result list.
pub fn query_hash(parts: &impl std::fmt::Debug) -> String {
    let text = format!("{parts:?}");
    blake3::hash(text.as_bytes()).to_hex()[..16].to_owned()
}

/// Encodes where the next page starts.
pub fn encode(after: &After, query: &str) -> String {
    let (k, v, id) = match after {
        After::Start => return String::new(),
        After::Text(v, id) => ('t', v.clone(), id.clone()),
        After::Int(v, id) => ('i', v.to_string(), id.clone()),
        After::Ranked(score, rowid) => ('k', format!("{score:e}"), rowid.to_string()),
    };
    let json = serde_json::to_vec(&Token {
        q: query.to_owned(),
        k,
        v,
        id,
    })
    .unwrap_or_default();
    json.iter().map(|b| format!("{b:02x}")).collect()
}

/// Decodes a token given with a request whose query hash is `query`.
pub fn decode(token: &str, query: &str) -> Result<After, IndexError> {
    if token.is_empty() {
        return Ok(After::Start);
    }
    let bad = || {
        IndexError::invalid(
            "page_token",
            "is not a token this service issued; start again without it",
        )
    };
    if !token.len().is_multiple_of(2) || token.len() > 4096 {
        return Err(bad());
    }
    // Pairs of bytes, not of chars: a token is ASCII hex, and anything else (say "aéa") is
    // refused rather than sliced inside a character.
    let hex = |b: u8| char::from(b).to_digit(16);
    let bytes: Vec<u8> = token
        .as_bytes()
        .chunks_exact(2)
        .map(|pair| Some((hex(pair[0])? << 4 | hex(pair[1])?) as u8))
        .collect::<Option<_>>()
        .ok_or_else(bad)?;
    let t: Token = serde_json::from_slice(&bytes).map_err(|_| bad())?;
    if t.q != query {
        return Err(IndexError::invalid(
            "page_token",
            "belongs to another query, filter or order; send the same request as the first page, or start again without a token",
        ));
    }
    Ok(match t.k {
        't' => After::Text(t.v, t.id),
        'i' => After::Int(t.v.parse().map_err(|_| bad())?, t.id),
        'k' => After::Ranked(
            t.v.parse::<f64>()
                .ok()
                .filter(|s| s.is_finite())
                .ok_or_else(bad)?,
            t.id.parse().map_err(|_| bad())?,
        ),
        _ => return Err(bad()),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_and_refusal() {
        let after = After::Ranked(12.625, 4242);
        let token = encode(&after, "abc");
        assert_eq!(decode(&token, "abc").ok(), Some(after));
        assert!(decode(&token, "other").is_err());
        assert!(decode("zz", "abc").is_err());
        assert!(decode("abc", "abc").is_err());
        assert_eq!(decode("", "abc").ok(), Some(After::Start));
        // Multi-byte characters of an even byte length: refused, not a panic.
        assert!(decode("aéa", "abc").is_err());
        assert!(decode("éé", "abc").is_err());
    }

    proptest::proptest! {
        #![proptest_config(proptest::prelude::ProptestConfig::with_cases(10_000))]

        /// Any string is either a token or a refusal: never a panic.
        #[test]
        fn any_string_decodes_or_is_refused(token in "\\PC{0,64}") {
            let _ = decode(&token, "q");
        }

        /// Any hex of any bytes (JSON or not) is either a token or a refusal.
        #[test]
        fn any_hex_decodes_or_is_refused(bytes in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..200)) {
            let token: String = bytes.iter().map(|b| format!("{b:02x}")).collect();
            let _ = decode(&token, "q");
        }

        /// Every cursor survives its own token.
        #[test]
        fn cursors_round_trip(key in "\\PC{0,40}", id in "\\PC{0,40}", n in proptest::prelude::any::<i64>()) {
            for after in [After::Text(key.clone(), id.clone()), After::Int(n, id.clone())] {
                let token = encode(&after, "q");
                proptest::prop_assert_eq!(decode(&token, "q").ok(), Some(after));
            }
        }
    }
}
