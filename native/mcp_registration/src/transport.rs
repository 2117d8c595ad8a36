//! One HTTP exchange: send a request on a pooled connection, read its body
//! within a byte cap, and name what went wrong when the transport fails.

use reqwest::header::{ACCEPT, AUTHORIZATION, CONTENT_TYPE};
use reqwest::{Method, StatusCode};
use url::Url;

use crate::client::{Options, Secret};
use crate::error::{Error, TransportError};

/// One request and its capped body.
pub(crate) async fn exchange(
    http: &reqwest::Client,
    method: Method,
    url: &Url,
    token: Option<&Secret>,
    body: Option<Vec<u8>>,
    options: &Options,
) -> Result<(StatusCode, Vec<u8>), Error> {
    let mut request = http
        .request(method, url.clone())
        .headers(options.headers.clone())
        .header(ACCEPT, "application/json");
    if let Some(token) = token {
        request = request.header(AUTHORIZATION, token.bearer());
    }
    if let Some(body) = body {
        request = request.header(CONTENT_TYPE, "application/json").body(body);
    }
    let mut response = request.send().await.map_err(transport_error)?;
    let status = response.status();
    let limit = options.max_response_bytes;
    if response.content_length().is_some_and(|len| len > limit) {
        return Err(TransportError::BodyTooLarge(limit).into());
    }
    let mut buffer = Vec::with_capacity(response.content_length().unwrap_or(0) as usize);
    while let Some(chunk) = response.chunk().await.map_err(transport_error)? {
        if (buffer.len() + chunk.len()) as u64 > limit {
            return Err(TransportError::BodyTooLarge(limit).into());
        }
        buffer.extend_from_slice(&chunk);
    }
    Ok((status, buffer))
}

/// Names a transport failure without the URL (it may be long) and never with
/// headers (they may hold tokens).
fn transport_error(err: reqwest::Error) -> TransportError {
    let timeout = err.is_timeout();
    let connect = err.is_connect();
    let message = error_chain(&err.without_url());
    let lower = message.to_ascii_lowercase();
    if ["certificate", "tls", "handshake", "x509"]
        .iter()
        .any(|w| lower.contains(w))
    {
        TransportError::Tls(message)
    } else if connect {
        TransportError::Connect(message)
    } else if timeout {
        TransportError::Timeout
    } else {
        TransportError::Connection(message)
    }
}

/// The causes of an error, outermost first, without the generic wrappers
/// ("error sending request", "client error (Connect)") that say nothing.
pub(crate) fn error_chain(err: &dyn std::error::Error) -> String {
    const GENERIC: &[&str] = &[
        "error sending request",
        "client error (",
        "request or response body error",
        "error decoding response body",
        "builder error",
    ];
    let mut parts: Vec<String> = Vec::new();
    let mut next = Some(err);
    while let Some(current) = next {
        let text = current.to_string();
        if !GENERIC.iter().any(|g| text.starts_with(g)) && !parts.iter().any(|p| p.contains(&text))
        {
            parts.push(text);
        }
        next = current.source();
    }
    if parts.is_empty() {
        err.to_string()
    } else {
        parts.join(": ")
    }
}
