//! Verification of push deliveries' `Orderly-Signature` header:
//! `t=<unix seconds>,v1=<hex HMAC-SHA256(secret, "<t>.<body>")>`, keyed with
//! the queue's `signing_secret`.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use hmac::{Hmac, Mac};
use sha2::Sha256;

fn mac(secret: &str, body: &[u8], timestamp: u64) -> Hmac<Sha256> {
    let mut mac = Hmac::<Sha256>::new_from_slice(secret.as_bytes()).expect("HMAC takes any key");
    mac.update(format!("{timestamp}.").as_bytes());
    mac.update(body);
    mac
}

/// The header value Orderly sends for `body` at unix time `timestamp`.
pub fn sign(secret: &str, body: &[u8], timestamp: u64) -> String {
    let digest = mac(secret, body, timestamp).finalize().into_bytes();
    format!("t={timestamp},v1={}", hex::encode(digest))
}

/// True when `header` signs exactly `body` (the raw request bytes) with
/// `secret` and its timestamp is within `tolerance` of now, so a captured
/// delivery cannot be replayed later. Compares in constant time.
pub fn verify_signature(secret: &str, header: &str, body: &[u8], tolerance: Duration) -> bool {
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    verify_signature_at(secret, header, body, tolerance, now)
}

/// [`verify_signature`] as of unix time `now`.
pub fn verify_signature_at(
    secret: &str,
    header: &str,
    body: &[u8],
    tolerance: Duration,
    now: u64,
) -> bool {
    let mut timestamp = None;
    let mut candidates = Vec::new();
    for part in header.split(',') {
        match part.trim().split_once('=') {
            Some(("t", value)) => timestamp = value.parse::<u64>().ok(),
            Some(("v1", value)) => candidates.push(value),
            _ => {}
        }
    }
    let Some(timestamp) = timestamp else {
        return false;
    };
    if now.abs_diff(timestamp) > tolerance.as_secs() {
        return false;
    }
    let mut matched = false;
    for candidate in candidates {
        let Ok(bytes) = hex::decode(candidate) else {
            continue;
        };
        // `verify_slice` compares in constant time.
        matched |= mac(secret, body, timestamp).verify_slice(&bytes).is_ok();
    }
    matched
}

#[cfg(test)]
mod tests {
    use super::*;

    const SECRET: &str = "whsec-test";
    const BODY: &[u8] = br#"{"n":1}"#;
    const NOW: u64 = 1_800_000_000;
    const TOLERANCE: Duration = Duration::from_secs(300);

    #[test]
    fn a_valid_signature_verifies() {
        let header = sign(SECRET, BODY, NOW - 10);
        assert!(verify_signature_at(SECRET, &header, BODY, TOLERANCE, NOW));
    }

    #[test]
    fn the_current_time_is_the_default() {
        let now = SystemTime::now().duration_since(UNIX_EPOCH).unwrap();
        let header = sign(SECRET, BODY, now.as_secs());
        assert!(verify_signature(SECRET, &header, BODY, TOLERANCE));
    }

    #[test]
    fn a_tampered_body_fails() {
        let header = sign(SECRET, BODY, NOW);
        assert!(!verify_signature_at(
            SECRET,
            &header,
            br#"{"n":2}"#,
            TOLERANCE,
            NOW
        ));
    }

    #[test]
    fn a_wrong_secret_fails() {
        let header = sign("other-secret", BODY, NOW);
        assert!(!verify_signature_at(SECRET, &header, BODY, TOLERANCE, NOW));
    }

    #[test]
    fn a_too_old_timestamp_fails() {
        let header = sign(SECRET, BODY, NOW - 3600);
        assert!(!verify_signature_at(SECRET, &header, BODY, TOLERANCE, NOW));
    }

    #[test]
    fn malformed_headers_fail() {
        for header in [
            "",
            "garbage",
            "t=abc,v1=00",
            &format!("t={NOW}"),
            &format!("t={NOW},v1=zz"),
        ] {
            assert!(
                !verify_signature_at(SECRET, header, BODY, TOLERANCE, NOW),
                "{header}"
            );
        }
    }
}
