//! Methods outside HTTP's standard set are named `OTHER` before anything
//! records the request: the request metrics label each request with its
//! method, and a client may send any token as one (`FOOBAR1 /healthz`), which
//! would add series without bound. No route serves such a method, so the
//! answer (`404`, or `405` with `Allow`) is the same either way.

use actix_web::body::MessageBody;
use actix_web::dev::{ServiceRequest, ServiceResponse};
use actix_web::http::Method;
use actix_web::middleware::Next;

/// The method standing for every non-standard one.
pub const OTHER: &str = "OTHER";

pub async fn middleware(
    mut req: ServiceRequest,
    next: Next<impl MessageBody>,
) -> Result<ServiceResponse<impl MessageBody>, actix_web::Error> {
    if !is_standard(req.method()) {
        req.head_mut().method = Method::from_bytes(OTHER.as_bytes()).expect("a valid token");
    }
    next.call(req).await
}

fn is_standard(method: &Method) -> bool {
    matches!(
        *method,
        Method::GET
            | Method::HEAD
            | Method::POST
            | Method::PUT
            | Method::DELETE
            | Method::PATCH
            | Method::OPTIONS
            | Method::CONNECT
            | Method::TRACE
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_the_standard_methods_keep_their_name() {
        assert!(is_standard(&Method::GET));
        assert!(is_standard(&Method::PATCH));
        assert!(!is_standard(&Method::from_bytes(b"FOOBAR1").unwrap()));
        assert!(!is_standard(&Method::from_bytes(b"get").unwrap()));
    }
}
