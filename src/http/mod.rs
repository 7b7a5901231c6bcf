//! The HTTP edge shared by every route: request ids and the error contract
//! ([`request_id`]), the JSON body extractor ([`json`]) and the in-flight gauge
//! ([`in_flight`]). Nothing here knows about users or queues.

pub mod in_flight;
pub mod json;
pub mod method;
pub mod request_id;

pub use json::ApiJson;
pub use request_id::RequestId;
