//! Push delivery: one signed HTTP POST of a job's payload to its queue's URL,
//! classified into an outcome, plus the SSRF guard that decides which
//! addresses may be delivered to.
//!
//! The guard runs at `PUT` time ([`check_target`]) and again at delivery time:
//! IP-literal URLs are checked before sending, and host names are resolved by
//! [`GuardedResolver`], which refuses private addresses and hands the checked
//! addresses to the connector (no second lookup to rebind). Redirects are never
//! followed. This module never touches Redis.

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use hmac::{Hmac, Mac};
use reqwest::dns::{Addrs, Name, Resolve, Resolving};
use reqwest::header::{CONTENT_TYPE, HeaderMap, HeaderName, HeaderValue};
use sha2::Sha256;

/// Longest response body kept as a job's `result`.
pub const MAX_RESULT_BYTES: usize = 64 * 1024;

/// Is `ip` somewhere a push must not reach unless private targets are allowed?
/// Loopback, private, link-local (incl. cloud metadata), CGNAT, unspecified,
/// broadcast, multicast, documentation and unique-local ranges.
pub fn is_private(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(v4) => {
            let o = v4.octets();
            v4.is_loopback()
                || v4.is_private()
                || v4.is_link_local()
                || v4.is_unspecified()
                || v4.is_broadcast()
                || v4.is_multicast()
                || v4.is_documentation()
                || o[0] == 0
                || (o[0] == 100 && (64..=127).contains(&o[1]))
                || (o[0] == 192 && o[1] == 0 && o[2] == 0)
                || (o[0] == 198 && (18..=19).contains(&o[1]))
                || o[0] >= 240
        }
        IpAddr::V6(v6) => {
            if v6.is_loopback() || v6.is_unspecified() {
                return true;
            }
            let s = v6.segments();
            // An IPv4 address carried inside: mapped (::ffff:a.b.c.d),
            // the deprecated compatible form (::a.b.c.d) and 6to4
            // (2002:aabb:ccdd::, routed to a.b.c.d by a relay) are judged
            // by it.
            if let Some(v4) = v6.to_ipv4() {
                return is_private(IpAddr::V4(v4));
            }
            if s[0] == 0x2002 {
                let [a, b] = s[1].to_be_bytes();
                let [c, d] = s[2].to_be_bytes();
                return is_private(IpAddr::V4(std::net::Ipv4Addr::new(a, b, c, d)));
            }
            v6.is_multicast()
                || (s[0] & 0xfe00) == 0xfc00
                || (s[0] & 0xffc0) == 0xfe80
                || (s[0] == 0x2001 && s[1] == 0x0db8)
                || (s[0] == 0x64 && s[1] == 0xff9b)
                // Teredo (2001:0::/32): a tunnel to an obfuscated IPv4 host.
                || (s[0] == 0x2001 && s[1] == 0)
        }
    }
}

/// Checks a push URL against the SSRF policy, resolving its host.
pub async fn check_target(url: &str, allow_private: bool) -> Result<(), String> {
    if allow_private {
        return Ok(());
    }
    let parsed = url::Url::parse(url).map_err(|_| "must be an absolute http(s) URL".to_owned())?;
    let port = parsed.port_or_known_default().unwrap_or(80);
    let addrs: Vec<IpAddr> = match parsed.host() {
        Some(url::Host::Ipv4(ip)) => vec![IpAddr::V4(ip)],
        Some(url::Host::Ipv6(ip)) => vec![IpAddr::V6(ip)],
        Some(url::Host::Domain(domain)) => tokio::net::lookup_host((domain, port))
            .await
            .map_err(|_| "the host does not resolve".to_owned())?
            .map(|a| a.ip())
            .collect(),
        None => return Err("must name a host".into()),
    };
    if addrs.is_empty() {
        return Err("the host does not resolve".into());
    }
    if addrs.iter().any(|ip| is_private(*ip)) {
        return Err("resolves to a private, loopback or link-local address".into());
    }
    Ok(())
}

/// DNS resolution that refuses private addresses (unless allowed).
struct GuardedResolver {
    allow_private: bool,
}

impl Resolve for GuardedResolver {
    fn resolve(&self, name: Name) -> Resolving {
        let allow_private = self.allow_private;
        let host = name.as_str().to_owned();
        Box::pin(async move {
            let addrs: Vec<SocketAddr> =
                tokio::net::lookup_host((host.as_str(), 0)).await?.collect();
            if !allow_private && addrs.iter().any(|a| is_private(a.ip())) {
                return Err(format!("refusing to deliver to {host}: private address").into());
            }
            Ok(Box::new(addrs.into_iter()) as Addrs)
        })
    }
}

/// The `Orderly-Signature` header value for `body` sent at unix time `t`.
pub fn signature(secret: &str, t: u64, body: &[u8]) -> String {
    let mut mac = Hmac::<Sha256>::new_from_slice(secret.as_bytes()).expect("HMAC takes any key");
    mac.update(t.to_string().as_bytes());
    mac.update(b".");
    mac.update(body);
    format!("t={t},v1={}", hex::encode(mac.finalize().into_bytes()))
}

/// What one push attempt produced.
#[derive(Debug)]
pub enum PushOutcome {
    /// 2xx: the job is completed with this result (JSON text).
    Delivered { result: String },
    /// 408/429/5xx, a 3xx, timeout or connection error: try again later.
    Retry { error: String },
    /// 429 or 503 with a `Retry-After` the receiver set: try again after it
    /// (the worker caps it at the queue's `backoff.max_ms`).
    RetryAfter { error: String, after: Duration },
    /// Any other 4xx or a refused target: no more attempts.
    Permanent { error: String },
}

/// One push: the job's identity headers plus its payload.
pub struct Push<'a> {
    pub url: &'a reqwest::Url,
    pub timeout: Duration,
    pub signing_secret: &'a str,
    pub job_id: &'a str,
    pub queue: &'a str,
    pub key: &'a str,
    pub seq: u64,
    pub attempt: u32,
    /// The lease number (monotonic per job): a fencing token receivers may
    /// store to refuse an older delivery that arrives late.
    pub lease: u64,
    pub payload: &'a [u8],
}

/// The HTTP client used for every push.
#[derive(Clone)]
pub struct Pusher {
    client: reqwest::Client,
    allow_private: bool,
}

impl Pusher {
    pub fn new(allow_private: bool) -> Result<Self, reqwest::Error> {
        // reqwest is built without a bundled crypto provider; use ring's.
        let _ = rustls::crypto::ring::default_provider().install_default();
        let client = reqwest::Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            .dns_resolver(Arc::new(GuardedResolver { allow_private }))
            .pool_max_idle_per_host(256)
            // One attempt is one request: Orderly retries by its own rules.
            // (reqwest's default retries HTTP/2 refusals, which this
            // HTTP/1.1-only client never sees, yet copies every request's
            // headers and body in case it must.)
            .retry(reqwest::retry::never().max_retries_per_request(0))
            .connect_timeout(Duration::from_secs(5))
            .user_agent(concat!("orderly/", env!("CARGO_PKG_VERSION")))
            .build()?;
        Ok(Self {
            client,
            allow_private,
        })
    }

    /// Delivers one attempt and classifies the answer.
    pub async fn push(&self, push: Push<'_>) -> PushOutcome {
        if !self.allow_private && literal_ip_is_private(push.url) {
            return PushOutcome::Permanent {
                error: "refusing to deliver to a private address".into(),
            };
        }
        let t = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_secs())
            .unwrap_or(0);
        let Some(headers) = push_headers(&push, t) else {
            return PushOutcome::Permanent {
                error: "the job's identity does not fit an HTTP header".into(),
            };
        };
        let request = self
            .client
            .post(push.url.clone())
            .timeout(push.timeout)
            .headers(headers)
            .body(push.payload.to_vec());
        let mut response = match request.send().await {
            Ok(response) => response,
            Err(err) => {
                let error = describe(&err);
                return if is_refused_target(&err) {
                    PushOutcome::Permanent { error }
                } else {
                    PushOutcome::Retry { error }
                };
            }
        };
        let status = response.status();
        let retry_after = response
            .headers()
            .get(reqwest::header::RETRY_AFTER)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| parse_retry_after(v, SystemTime::now()));
        let mut body = Vec::new();
        while body.len() < MAX_RESULT_BYTES {
            match response.chunk().await {
                Ok(Some(chunk)) => body.extend_from_slice(&chunk),
                Ok(None) => break,
                Err(err) if status.is_success() => {
                    return PushOutcome::Retry {
                        error: format!("reading the response failed: {}", describe(&err)),
                    };
                }
                Err(_) => break,
            }
        }
        body.truncate(MAX_RESULT_BYTES);
        let code = status.as_u16();
        if status.is_success() {
            PushOutcome::Delivered {
                result: result_json(&body),
            }
        } else if let (429 | 503, Some(after)) = (code, retry_after) {
            PushOutcome::RetryAfter {
                error: format!(
                    "receiver answered {code} (Retry-After {} ms)",
                    after.as_millis()
                ),
                after,
            }
        } else if code == 408 || code == 429 || status.is_server_error() || status.is_redirection()
        {
            PushOutcome::Retry {
                error: format!("receiver answered {code}"),
            }
        } else {
            PushOutcome::Permanent {
                error: format!("receiver answered {code}"),
            }
        }
    }
}

const JOB_ID: HeaderName = HeaderName::from_static("orderly-job-id");
const QUEUE: HeaderName = HeaderName::from_static("orderly-queue");
const KEY: HeaderName = HeaderName::from_static("orderly-key");
const SEQ: HeaderName = HeaderName::from_static("orderly-seq");
const ATTEMPT: HeaderName = HeaderName::from_static("orderly-attempt");
const LEASE: HeaderName = HeaderName::from_static("orderly-lease");
const SIGNATURE: HeaderName = HeaderName::from_static("orderly-signature");

/// A push's headers, built from constant names and integer values (by name
/// and by text they cost a parse and a format each, per delivery). `None`
/// if a value cannot be a header value (ids and queue names always can; the
/// key is made safe first).
fn push_headers(push: &Push<'_>, t: u64) -> Option<HeaderMap> {
    let text = |v: &str| HeaderValue::from_str(v).ok();
    let mut headers = HeaderMap::with_capacity(8);
    headers.insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
    headers.insert(JOB_ID, text(push.job_id)?);
    headers.insert(QUEUE, text(push.queue)?);
    headers.insert(KEY, text(&header_safe(push.key))?);
    headers.insert(SEQ, HeaderValue::from(push.seq));
    headers.insert(ATTEMPT, HeaderValue::from(push.attempt));
    headers.insert(LEASE, HeaderValue::from(push.lease));
    let signed = signature(push.signing_secret, t, push.payload);
    headers.insert(SIGNATURE, text(&signed)?);
    Some(headers)
}

/// A `Retry-After` value: delay-seconds or an HTTP date (a date in the
/// past means now).
pub fn parse_retry_after(value: &str, now: SystemTime) -> Option<Duration> {
    let value = value.trim();
    if let Ok(seconds) = value.parse::<u64>() {
        return Some(Duration::from_secs(seconds));
    }
    let at = chrono::DateTime::parse_from_rfc2822(value).ok()?;
    let at = UNIX_EPOCH + Duration::from_millis(at.timestamp_millis().max(0) as u64);
    Some(at.duration_since(now).unwrap_or(Duration::ZERO))
}

fn literal_ip_is_private(url: &reqwest::Url) -> bool {
    match url.host() {
        Some(url::Host::Ipv4(ip)) => is_private(IpAddr::V4(ip)),
        Some(url::Host::Ipv6(ip)) => is_private(IpAddr::V6(ip)),
        _ => false,
    }
}

fn is_refused_target(err: &reqwest::Error) -> bool {
    let mut source: Option<&dyn std::error::Error> = Some(err);
    while let Some(e) = source {
        if e.to_string().contains("refusing to deliver") {
            return true;
        }
        source = e.source();
    }
    false
}

fn describe(err: &reqwest::Error) -> String {
    if err.is_timeout() {
        return "delivery timed out".into();
    }
    let mut text = err.to_string();
    let mut source = std::error::Error::source(err);
    while let Some(e) = source {
        text.push_str(": ");
        text.push_str(&e.to_string());
        source = e.source();
    }
    text
}

/// A lane key as a header value. Header values are visible ASCII (inner
/// spaces allowed; a parser trims outer ones), so a key that is not — or that
/// holds a `%` — is sent percent-encoded: its UTF-8 bytes other than ASCII
/// letters, digits and `*-._` as `%XX` (a space too). An encoded value always
/// holds a `%` and a plain one never does, so a receiver percent-decodes
/// exactly the values that hold a `%`.
fn header_safe(value: &str) -> String {
    let plain = value
        .bytes()
        .all(|b| (0x20..0x7f).contains(&b) && b != b'%')
        && !value.starts_with(' ')
        && !value.ends_with(' ');
    if plain {
        return value.to_owned();
    }
    // (Form encoding writes a space as `+`, and a `+` as `%2B`.)
    url::form_urlencoded::byte_serialize(value.as_bytes())
        .collect::<String>()
        .replace('+', "%20")
}

/// The receiver's body as the job's `result`: its JSON if it is JSON, else a
/// JSON string of its text, `null` when empty.
pub fn result_json(body: &[u8]) -> String {
    if body.iter().all(u8::is_ascii_whitespace) {
        return "null".into();
    }
    if serde_json::from_slice::<serde::de::IgnoredAny>(body).is_ok() {
        return String::from_utf8_lossy(body).into_owned();
    }
    serde_json::to_string(&String::from_utf8_lossy(body)).unwrap_or_else(|_| "null".into())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_key_header_holds_a_percent_exactly_when_it_is_encoded() {
        let decode = |header: &str| -> String {
            if header.contains('%') {
                url::form_urlencoded::parse(format!("k={header}").as_bytes())
                    .next()
                    .map(|(_, v)| v.into_owned())
                    .unwrap_or_default()
            } else {
                header.to_owned()
            }
        };
        for key in [
            "",
            "user-42",
            "a b",
            "a+b",
            "user:42/x",
            "100%",
            "%41",
            "é",
            "a+é",
            " a",
            "b ",
            "tab\there",
            "\u{1F600}",
            "%",
        ] {
            let header = header_safe(key);
            assert!(
                header.bytes().all(|b| (0x20..0x7f).contains(&b))
                    && !header.starts_with(' ')
                    && !header.ends_with(' '),
                "{key:?} -> {header:?} is not a plain header value"
            );
            assert_eq!(decode(&header), key, "{key:?} -> {header:?}");
        }
        assert_eq!(
            header_safe("user:42 a+b"),
            "user:42 a+b",
            "plain keys as they are"
        );
    }

    #[test]
    fn private_ranges_are_recognised() {
        for ip in [
            "127.0.0.1",
            "10.1.2.3",
            "172.16.0.1",
            "192.168.1.1",
            "169.254.169.254",
            "0.0.0.0",
            "100.64.0.1",
            "::1",
            "::",
            "fe80::1",
            "fd00::1",
            "::ffff:127.0.0.1",
            "::127.0.0.1",
            "2002:7f00:1::",
            "2002:a9fe:a9fe::1",
            "2002:c0a8:101::",
            "2001:0:4136:e378:8000:63bf:3fff:fdd2",
        ] {
            assert!(is_private(ip.parse().unwrap()), "{ip}");
        }
        for ip in [
            "1.1.1.1",
            "93.184.216.34",
            "2606:4700::1111",
            "2002:5db8:d822::1",
        ] {
            assert!(!is_private(ip.parse().unwrap()), "{ip}");
        }
    }

    #[tokio::test]
    async fn decimal_and_hex_ip_forms_are_caught() {
        for url in [
            "http://2130706433/",
            "http://0x7f000001/",
            "http://127.1/",
            "http://[::1]:8080/",
            "http://localhost:9/",
            "http://0.0.0.0/",
        ] {
            assert!(check_target(url, false).await.is_err(), "{url}");
        }
        assert!(check_target("http://127.0.0.1/", true).await.is_ok());
    }

    #[test]
    fn signatures_are_hmac_sha256_of_timestamp_dot_body() {
        let sig = signature("secret", 1_700_000_000, br#"{"a":1}"#);
        let mut mac = Hmac::<Sha256>::new_from_slice(b"secret").unwrap();
        mac.update(br#"1700000000.{"a":1}"#);
        let expected = hex::encode(mac.finalize().into_bytes());
        assert_eq!(sig, format!("t=1700000000,v1={expected}"));
    }

    #[test]
    fn retry_after_takes_seconds_or_an_http_date() {
        let now = UNIX_EPOCH + Duration::from_secs(1_445_412_480);
        assert_eq!(parse_retry_after("2", now), Some(Duration::from_secs(2)));
        assert_eq!(
            parse_retry_after("Wed, 21 Oct 2015 07:28:30 GMT", now),
            Some(Duration::from_secs(30))
        );
        assert_eq!(
            parse_retry_after("Wed, 21 Oct 2015 07:00:00 GMT", now),
            Some(Duration::ZERO)
        );
        assert_eq!(parse_retry_after("soon", now), None);
    }

    #[test]
    fn results_keep_json_and_wrap_text() {
        assert_eq!(result_json(br#"{"ok":true}"#), r#"{"ok":true}"#);
        assert_eq!(result_json(b"done"), r#""done""#);
        assert_eq!(result_json(b""), "null");
    }
}
