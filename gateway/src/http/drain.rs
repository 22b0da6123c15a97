//! Answering a request without its body.
//!
//! Over HTTP/2 an answer sent while the client is still sending resets the
//! stream, and clients such as curl then report a transport error instead of
//! the answer. So a refusal reads (and discards) a small body first; large or
//! slow bodies are not waited for.

use std::time::Duration;

use actix_web::{HttpResponse, Route, web};
use futures_util::StreamExt;

use crate::http::errors;

/// Most of a body read before answering without it.
const LIMIT: usize = 64 << 10;
/// Longest wait for that body.
const WAIT: Duration = Duration::from_secs(2);

/// `response`, once up to [`LIMIT`] bytes of `body` are read or [`WAIT`] has passed.
pub async fn after_draining(mut body: web::Payload, response: HttpResponse) -> HttpResponse {
    let drain = async {
        let mut seen = 0usize;
        while let Some(Ok(chunk)) = body.next().await {
            seen += chunk.len();
            if seen > LIMIT {
                break;
            }
        }
    };
    let _ = tokio::time::timeout(WAIT, drain).await;
    response
}

/// The default service of a resource that answers only `allow`: 405 in
/// registry format, naming `allow`, after the body.
pub fn only(allow: &'static str) -> Route {
    web::to(move |body: web::Payload| after_draining(body, errors::method_not_allowed(allow)))
}
