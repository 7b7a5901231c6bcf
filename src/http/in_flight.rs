//! Counts HTTP requests currently being handled, for the
//! `orderly_http_requests_in_flight` gauge.

use actix_web::body::MessageBody;
use actix_web::dev::{ServiceRequest, ServiceResponse};
use actix_web::middleware::Next;
use actix_web::{Error, web};
use prometheus::IntGauge;

/// The gauge, shared with the app as `web::Data<InFlight>`.
#[derive(Clone)]
pub struct InFlight(pub IntGauge);

/// Decrements on drop, so a cancelled request is not counted forever.
struct Guard(IntGauge);

impl Drop for Guard {
    fn drop(&mut self) {
        self.0.dec();
    }
}

/// The middleware function; wrap it with `actix_web::middleware::from_fn`.
pub async fn middleware(
    req: ServiceRequest,
    next: Next<impl MessageBody>,
) -> Result<ServiceResponse<impl MessageBody>, Error> {
    let _guard = req.app_data::<web::Data<InFlight>>().map(|gauge| {
        gauge.0.inc();
        Guard(gauge.0.clone())
    });
    next.call(req).await
}
