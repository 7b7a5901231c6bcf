//! `ApiJson<T>`: the body extractor every JSON route uses.
//!
//! It answers `415` for a non-JSON content type, `413` over the body limit,
//! `400 invalid_json` for bytes that are not JSON (including invalid UTF-8 and
//! nesting deeper than serde_json's recursion limit), and `422` with the path of
//! the offending field when the JSON does not fit `T`. It parses in one pass.

use std::collections::BTreeMap;

use actix_web::dev::Payload;
use actix_web::{FromRequest, HttpMessage, HttpRequest, mime, web};
use futures_util::future::LocalBoxFuture;
use serde::de::DeserializeOwned;
use serde_json::value::RawValue;

use crate::error::ApiError;

/// A JSON request body parsed into `T`.
#[derive(Debug)]
pub struct ApiJson<T>(pub T);

fn is_json(req: &HttpRequest) -> bool {
    match req.mime_type() {
        Ok(Some(mime)) => mime.subtype() == mime::JSON || mime.suffix() == Some(mime::JSON),
        _ => false,
    }
}

/// Deepest nesting accepted anywhere in a body (serde_json's own limit for
/// typed values; raw payloads are checked against it too).
pub const MAX_DEPTH: usize = 128;

/// Does the JSON text nest arrays/objects deeper than `max`? A byte scan that
/// skips strings; it runs before parsing, so raw payloads are bounded too.
fn nests_deeper_than(bytes: &[u8], max: usize) -> bool {
    let (mut depth, mut in_string, mut escaped) = (0usize, false, false);
    for &b in bytes {
        if in_string {
            match (escaped, b) {
                (true, _) => escaped = false,
                (false, b'\\') => escaped = true,
                (false, b'"') => in_string = false,
                _ => {}
            }
            continue;
        }
        match b {
            b'"' => in_string = true,
            b'[' | b'{' => {
                depth += 1;
                if depth > max {
                    return true;
                }
            }
            b']' | b'}' => depth = depth.saturating_sub(1),
            _ => {}
        }
    }
    false
}

/// Parses `bytes` as `T`, classifying failures per the contract. Every
/// body of this API is a JSON object: other JSON (an array, which serde
/// would read into a struct field by field) is a `422`.
pub fn parse<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, ApiError> {
    if nests_deeper_than(bytes, MAX_DEPTH) {
        return Err(ApiError::invalid_json(format!(
            "the body nests deeper than {MAX_DEPTH} levels"
        )));
    }
    let first = bytes.iter().find(|b| !b.is_ascii_whitespace());
    if first.is_some_and(|b| *b != b'{')
        && serde_json::from_slice::<serde::de::IgnoredAny>(bytes).is_ok()
    {
        return Err(ApiError::invalid_field("body", "must be a JSON object"));
    }
    let mut deserializer = serde_json::Deserializer::from_slice(bytes);
    let value = serde_path_to_error::deserialize(&mut deserializer).map_err(|err| {
        let path = err.path().to_string();
        let inner = err.into_inner();
        // A data error may come before a syntax error later in the body
        // (`{} {}`): bytes that are not JSON at all are always a 400.
        if inner.is_data() && serde_json::from_slice::<serde::de::IgnoredAny>(bytes).is_ok() {
            let (field, reason) = locate(&path, &inner);
            let field = if field == "." {
                "body".to_owned()
            } else {
                field
            };
            ApiError::validation(BTreeMap::from([(field, reason)]))
        } else {
            ApiError::invalid_json(format!("the body is not valid JSON: {inner}"))
        }
    })?;
    deserializer
        .end()
        .map_err(|err| ApiError::invalid_json(format!("the body is not valid JSON: {err}")))?;
    Ok(value)
}

/// A JSON object nested in a body, parsed into `T`; on failure, the path
/// inside it (`"."` for the object itself) and why. serde would also read a
/// struct from an array, field by field: this refuses anything but an object.
fn nested<T: DeserializeOwned>(raw: &RawValue) -> Result<T, (String, String)> {
    if !raw.get().starts_with('{') {
        return Err((".".to_owned(), "must be a JSON object".to_owned()));
    }
    let mut deserializer = serde_json::Deserializer::from_str(raw.get());
    serde_path_to_error::deserialize(&mut deserializer)
        .map_err(|err| locate(&err.path().to_string(), err.inner()))
}

/// The field a data error names and why (`.` for the object itself): where
/// serde stopped, joined with what the message places deeper — a nested
/// object's own path (`object::option` writes "at `inner.path`: reason"),
/// or a missing field, which serde reports at the object that lacks it
/// (`{"fields": {"lease": "missing field `lease`"}}`, not `body`).
fn locate(path: &str, err: &serde_json::Error) -> (String, String) {
    let mut reason = strip_position(err);
    let mut path = path.to_owned();
    let join = |path: &str, inner: &str| match path {
        "." => inner.to_owned(),
        path => format!("{path}.{inner}"),
    };
    // (A nested path already names a missing field: the inner `locate`
    // joined it.)
    let nested = reason
        .strip_prefix(NESTED_AT)
        .and_then(|rest| rest.split_once("`: "))
        .map(|(inner, rest)| (inner.to_owned(), rest.to_owned()));
    if let Some((inner, rest)) = nested {
        path = join(&path, &inner);
        reason = rest;
    } else if let Some((name, _)) = reason
        .strip_prefix("missing field `")
        .and_then(|rest| rest.split_once('`'))
    {
        path = join(&path, name);
    }
    (path, reason)
}

/// How `object::option` prefixes a nested object's error with its path.
const NESTED_AT: &str = "at `";

/// An item of a list in a body (a batch's job), parsed into `T`; errors name
/// the field under `at` (`jobs[3]`, `jobs[3].delay_ms`).
pub fn parse_item<T: DeserializeOwned>(raw: &RawValue, at: &str) -> Result<T, ApiError> {
    nested(raw).map_err(|(path, reason)| {
        let field = if path == "." {
            at.to_owned()
        } else {
            format!("{at}.{path}")
        };
        ApiError::invalid_field(&field, reason)
    })
}

/// Optional nested objects (`backoff`, `delivery`), objects only. Use as
/// `#[serde(default, deserialize_with = "object::option")]`.
pub mod object {
    use serde::de::{DeserializeOwned, Error};
    use serde::{Deserialize, Deserializer};
    use serde_json::value::RawValue;

    pub fn option<'de, D: Deserializer<'de>, T: DeserializeOwned>(
        d: D,
    ) -> Result<Option<T>, D::Error> {
        let Some(raw) = Option::<Box<RawValue>>::deserialize(d)? else {
            return Ok(None);
        };
        super::nested(&raw)
            .map(Some)
            .map_err(|(path, reason)| match path.as_str() {
                "." => D::Error::custom(reason),
                path => D::Error::custom(format!("{}{path}`: {reason}", super::NESTED_AT)),
            })
    }
}

/// Integer fields written `5.0`: JSON does not tell `5` from `5.0`, nor does
/// the OpenAPI `integer` type, so both are accepted (`5.5` and negatives are
/// not). Use as `#[serde(default, deserialize_with = "integer::option")]`.
pub mod integer {
    use serde::de::Error;
    use serde::{Deserialize, Deserializer};

    fn exact<T: TryFrom<u64>>(number: &serde_json::Number) -> Option<T> {
        let whole = match number.as_u64() {
            Some(whole) => whole,
            None => {
                let float = number.as_f64()?;
                let fits =
                    float.fract() == 0.0 && (0.0..18_446_744_073_709_551_616.0).contains(&float);
                fits.then_some(float as u64)?
            }
        };
        T::try_from(whole).ok()
    }

    fn checked<T: TryFrom<u64>, E: Error>(number: serde_json::Number) -> Result<T, E> {
        exact(&number).ok_or_else(|| {
            E::custom(format!(
                "invalid value: {number}, expected a non-negative integer in range"
            ))
        })
    }

    /// A required integer field.
    pub fn required<'de, D: Deserializer<'de>, T: TryFrom<u64>>(d: D) -> Result<T, D::Error> {
        checked(serde_json::Number::deserialize(d)?)
    }

    /// An optional (or `null`) integer field.
    pub fn option<'de, D: Deserializer<'de>, T: TryFrom<u64>>(d: D) -> Result<Option<T>, D::Error> {
        Option::<serde_json::Number>::deserialize(d)?
            .map(checked)
            .transpose()
    }
}

/// serde's data errors end with " at line 1 column 42", useless to a client.
fn strip_position(err: &serde_json::Error) -> String {
    let text = err.to_string();
    match text.rfind(" at line ") {
        Some(idx) => text[..idx].to_owned(),
        None => text,
    }
}

impl<T: DeserializeOwned + 'static> FromRequest for ApiJson<T> {
    type Error = ApiError;
    type Future = LocalBoxFuture<'static, Result<Self, ApiError>>;

    fn from_request(req: &HttpRequest, payload: &mut Payload) -> Self::Future {
        if !is_json(req) {
            return Box::pin(async { Err(ApiError::unsupported_media_type()) });
        }
        let body = body_bytes(req, payload);
        Box::pin(async move { parse(&body.await?).map(ApiJson) })
    }
}

/// The request's body, its read errors (too large, broken) as API errors.
fn body_bytes(
    req: &HttpRequest,
    payload: &mut Payload,
) -> impl std::future::Future<Output = Result<web::Bytes, ApiError>> + 'static {
    let body = web::Bytes::from_request(req, payload);
    async move {
        body.await.map_err(|err| match err.as_error() {
            Some(payload) => ApiError::from_payload(payload),
            None => ApiError::from_actix(&err),
        })
    }
}

/// A JSON body as [`ApiJson`], or `T::default()` when the request has no
/// body at all (zero bytes, whatever its `Content-Type`) or its body is JSON
/// `null` (what the OpenAPI document's optional body allows): for routes
/// whose every field is optional, so a bare `POST` does what `{}` does. A
/// body that is present must be JSON, as for [`ApiJson`].
#[derive(Debug)]
pub struct ApiJsonOrEmpty<T>(pub T);

impl<T: DeserializeOwned + Default + 'static> FromRequest for ApiJsonOrEmpty<T> {
    type Error = ApiError;
    type Future = LocalBoxFuture<'static, Result<Self, ApiError>>;

    fn from_request(req: &HttpRequest, payload: &mut Payload) -> Self::Future {
        let json = is_json(req);
        let body = body_bytes(req, payload);
        Box::pin(async move {
            let bytes = body.await?;
            if bytes.is_empty() || (json && bytes.trim_ascii() == b"null") {
                return Ok(ApiJsonOrEmpty(T::default()));
            }
            if !json {
                return Err(ApiError::unsupported_media_type());
            }
            parse(&bytes).map(ApiJsonOrEmpty)
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::error::ErrorCode;
    use serde::Deserialize;

    #[derive(Debug, Deserialize)]
    #[allow(dead_code)]
    struct Login {
        email: String,
        password: String,
    }

    #[test]
    fn syntax_errors_are_invalid_json() {
        let err = parse::<Login>(b"{\"email\":").unwrap_err();
        assert_eq!(err.code(), ErrorCode::InvalidJson);
        let err = parse::<Login>(b"\xff\xfe").unwrap_err();
        assert_eq!(err.code(), ErrorCode::InvalidJson);
    }

    #[test]
    fn wrong_types_name_the_field() {
        let err = parse::<Login>(br#"{"email":{"$gt":""},"password":"x"}"#).unwrap_err();
        assert_eq!(err.code(), ErrorCode::ValidationFailed);
        assert!(format!("{err:?}").contains("\"email\""));
    }

    #[test]
    fn a_missing_field_is_named_itself() {
        let err = parse::<Login>(br#"{"email":"a@example.com"}"#).unwrap_err();
        assert_eq!(err.code(), ErrorCode::ValidationFailed);
        let debug = format!("{err:?}");
        assert!(
            debug.contains("\"password\"") && !debug.contains("\"body\""),
            "{debug}"
        );
        #[derive(Debug, Deserialize)]
        #[allow(dead_code)]
        struct Outer {
            inner: Login,
        }
        let err = parse::<Outer>(br#"{"inner":{"password":"x"}}"#).unwrap_err();
        assert!(format!("{err:?}").contains("\"inner.email\""), "{err:?}");
        let raw = RawValue::from_string(r#"{"email":"a@example.com"}"#.to_owned()).unwrap();
        let err = parse_item::<Login>(&raw, "jobs[2]").unwrap_err();
        assert!(
            format!("{err:?}").contains("\"jobs[2].password\""),
            "{err:?}"
        );
    }

    #[test]
    fn errors_inside_optional_objects_name_the_inner_field() {
        #[derive(Debug, Deserialize)]
        #[allow(dead_code)]
        struct Settings {
            #[serde(default, deserialize_with = "object::option")]
            login: Option<Login>,
        }
        for (body, field, reason) in [
            (
                r#"{"login":{"email":"a@example.com"}}"#,
                "login.password",
                "missing field",
            ),
            (
                r#"{"login":{"email":5,"password":"x"}}"#,
                "login.email",
                "invalid type",
            ),
            (r#"{"login":[1]}"#, "login", "must be a JSON object"),
        ] {
            let err = parse::<Settings>(body.as_bytes()).unwrap_err();
            let debug = format!("{err:?}");
            assert!(
                debug.contains(&format!("\"{field}\": \"{reason}")),
                "{body}: {debug}"
            );
        }
    }

    #[test]
    fn deep_nesting_is_rejected_without_overflowing_the_stack() {
        let depth = 100_000;
        let body = format!("{}{}", "[".repeat(depth), "]".repeat(depth));
        let err = parse::<serde_json::Value>(body.as_bytes()).unwrap_err();
        assert_eq!(err.code(), ErrorCode::InvalidJson);
    }

    #[test]
    fn deep_raw_payloads_are_rejected_but_brackets_in_strings_are_not() {
        #[derive(Debug, Deserialize)]
        #[allow(dead_code)]
        struct Publish {
            payload: Box<serde_json::value::RawValue>,
        }
        let deep = format!(r#"{{"payload":{}{}}}"#, "[".repeat(200), "]".repeat(200));
        assert_eq!(
            parse::<Publish>(deep.as_bytes()).unwrap_err().code(),
            ErrorCode::InvalidJson
        );
        let text = format!(
            r#"{{"payload":"{}\"{}"}}"#,
            "[".repeat(500),
            "{".repeat(500)
        );
        assert!(parse::<Publish>(text.as_bytes()).is_ok());
        let ok = format!(r#"{{"payload":{}{}}}"#, "[".repeat(100), "]".repeat(100));
        assert!(parse::<Publish>(ok.as_bytes()).is_ok());
    }

    #[test]
    fn trailing_garbage_is_invalid_json() {
        let err = parse::<serde_json::Value>(b"{} {}").unwrap_err();
        assert_eq!(err.code(), ErrorCode::InvalidJson);
    }

    #[test]
    fn bodies_must_be_objects() {
        let err = parse::<serde_json::Value>(b" [null, null]").unwrap_err();
        assert_eq!(err.code(), ErrorCode::ValidationFailed);
        let err = parse::<serde_json::Value>(b"[").unwrap_err();
        assert_eq!(err.code(), ErrorCode::InvalidJson);
    }

    #[test]
    fn integers_may_be_written_as_integral_floats() {
        #[derive(Debug, Deserialize)]
        struct Body {
            #[serde(default, deserialize_with = "integer::option")]
            n: Option<u32>,
        }
        assert_eq!(parse::<Body>(br#"{"n": 5.0}"#).unwrap().n, Some(5));
        assert_eq!(parse::<Body>(br#"{"n": null}"#).unwrap().n, None);
        assert_eq!(parse::<Body>(br#"{}"#).unwrap().n, None);
        for bad in [
            r#"{"n": 5.5}"#,
            r#"{"n": -1}"#,
            r#"{"n": 4294967296}"#,
            r#"{"n": "5"}"#,
        ] {
            let err = parse::<Body>(bad.as_bytes()).unwrap_err();
            assert_eq!(err.code(), ErrorCode::ValidationFailed, "{bad}");
        }
    }
}
