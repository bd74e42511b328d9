//! One bound on a request's head (request line and headers): [`MAX_HEAD_BYTES`], answered 431
//! with the error body, and the connection closed. The connection layer (`crate::server`) also
//! caps what hyper buffers for a head, but only roughly; this is the exact, documented limit.

use super::error::AppError;
use axum::extract::Request;
use axum::middleware::Next;
use axum::response::Response;

/// The largest request head a client may send.
pub const MAX_HEAD_BYTES: usize = 64 * 1024;

/// The size of a request's head as sent: request line and header lines.
fn head_bytes(request: &Request) -> usize {
    let target = request
        .uri()
        .path_and_query()
        .map_or(0, |target| target.as_str().len());
    let request_line = request.method().as_str().len() + target + "  HTTP/1.1\r\n".len();
    let headers: usize = request
        .headers()
        .iter()
        .map(|(name, value)| name.as_str().len() + value.len() + ": \r\n".len())
        .sum();
    request_line + headers
}

/// Refuses a request whose head is larger than [`MAX_HEAD_BYTES`].
pub async fn refuse_oversized(request: Request, next: Next) -> Result<Response, AppError> {
    if head_bytes(&request) > MAX_HEAD_BYTES {
        return Err(AppError::HeadTooLarge {
            limit: MAX_HEAD_BYTES,
        });
    }
    Ok(next.run(request).await)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_head_counts_the_request_line_and_every_header_line() {
        let request = Request::builder()
            .uri("/v1/environments?status=ready")
            .header("x-a", "12345")
            .body(axum::body::Body::empty())
            .unwrap();
        // "GET /v1/environments?status=ready HTTP/1.1\r\n" + "x-a: 12345\r\n"
        assert_eq!(head_bytes(&request), 44 + 12);
    }
}
