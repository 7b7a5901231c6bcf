//! Files compiled into the binary and served as they are (the `/docs` and
//! `/console` pages and their scripts and styles): nothing is read from disk
//! or fetched from elsewhere at run time. Only names in a page's own table are
//! ever served, so a path can never reach another file.

use actix_web::HttpResponse;
use actix_web::http::header::{CACHE_CONTROL, X_CONTENT_TYPE_OPTIONS};

use crate::error::ApiError;

/// One served file: its `{asset}` path segment, content type and bytes.
pub type Asset = (&'static str, &'static str, &'static [u8]);

pub const JAVASCRIPT: &str = "text/javascript; charset=utf-8";
pub const CSS: &str = "text/css; charset=utf-8";

/// The asset called `name` from `assets`, or `404 not_found`.
pub fn serve(
    assets: &[Asset],
    name: &str,
    cache_control: &'static str,
) -> Result<HttpResponse, ApiError> {
    let (_, content_type, body) = assets
        .iter()
        .find(|(asset, _, _)| *asset == name)
        .ok_or_else(|| ApiError::not_found("no such asset"))?;
    Ok(HttpResponse::Ok()
        .content_type(*content_type)
        .insert_header((CACHE_CONTROL, cache_control))
        .insert_header((X_CONTENT_TYPE_OPTIONS, "nosniff"))
        .body(*body))
}
