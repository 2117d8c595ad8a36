//! One HTTP exchange: send a request on a pooled connection, read its body
//! within a byte cap, and name what went wrong when the transport fails.
//!
//! - Idempotent requests (GET, PUT, DELETE; RFC 9110 §9.2.2) are sent once
//!   more when the connection closed or reset before the answer's head
//!   arrived, which is what a pooled keep-alive connection that the server
//!   has just closed looks like (RFC 9112 §9.3.1). A POST is never repeated:
//!   it may have reached the server.
//! - The body buffer is sized by what arrives, never by the server's
//!   `Content-Length` alone (RFC 9112 §6.3): at most [`PREALLOCATION_BYTES`]
//!   are reserved up front.
//! - Failures are classified by the types in the error's source chain
//!   (rustls, `std::io`, hyper), not by the wording of their messages.

use std::error::Error as StdError;
use std::io::ErrorKind;

use reqwest::header::{ACCEPT, AUTHORIZATION, CONTENT_TYPE};
use reqwest::{Method, StatusCode};
use url::Url;

use crate::client::{Options, Secret};
use crate::error::{Error, TransportError};
use crate::pool::{with_connect_timeout, ConnectTimedOut};
use crate::proxy::ProxySetting;

/// The most a response body reserves before its bytes arrive.
pub const PREALLOCATION_BYTES: u64 = 64 * 1024;

/// One request and its capped body.
pub(crate) async fn exchange(
    http: &reqwest::Client,
    method: Method,
    url: &Url,
    token: Option<&Secret>,
    body: Option<Vec<u8>>,
    options: &Options,
) -> Result<(StatusCode, Vec<u8>), Error> {
    let idempotent = method != Method::POST;
    let mut retried = false;
    let response = loop {
        let mut request = http
            .request(method.clone(), url.clone())
            .headers(options.headers.clone())
            .header(ACCEPT, "application/json");
        if let Some(token) = token {
            request = request.header(AUTHORIZATION, token.bearer());
        }
        if let Some(body) = &body {
            request = request
                .header(CONTENT_TYPE, "application/json")
                .body(body.clone());
        }
        match with_connect_timeout(options.connect_timeout, request.send()).await {
            Ok(response) => break response,
            Err(err) if idempotent && !retried && closed_before_answer(&err) => retried = true,
            Err(err) => {
                // The guarded resolver (net_guard) refused the host's addresses.
                if let Some(refused) = crate::net_guard::find_refusal(&err) {
                    return Err(crate::net_guard::refusal(url, refused));
                }
                return Err(classify(err, url, &options.proxy).into());
            }
        }
    };
    if response.status() == StatusCode::PROXY_AUTHENTICATION_REQUIRED
        && options.proxy != ProxySetting::Direct
    {
        return Err(
            TransportError::Proxy("the proxy requires authentication (HTTP 407)".into()).into(),
        );
    }
    read_body(response, url, options).await
}

async fn read_body(
    mut response: reqwest::Response,
    url: &Url,
    options: &Options,
) -> Result<(StatusCode, Vec<u8>), Error> {
    let status = response.status();
    let limit = options.max_response_bytes;
    let announced = response.content_length();
    if announced.is_some_and(|len| len > limit) {
        return Err(TransportError::BodyTooLarge(limit).into());
    }
    let reserve = announced.unwrap_or(0).min(PREALLOCATION_BYTES);
    let mut buffer = Vec::with_capacity(reserve as usize);
    loop {
        let chunk = match response.chunk().await {
            Ok(Some(chunk)) => chunk,
            Ok(None) => break,
            Err(err) => return Err(classify(err, url, &options.proxy).into()),
        };
        if (buffer.len() as u64).saturating_add(chunk.len() as u64) > limit {
            return Err(TransportError::BodyTooLarge(limit).into());
        }
        buffer.extend_from_slice(&chunk);
    }
    Ok((status, buffer))
}

/// Every error of the source chain, the payloads of `io::Error`s included
/// (an `io::Error`'s own `source()` skips its payload).
fn causes<'a>(err: &'a (dyn StdError + 'static)) -> Vec<&'a (dyn StdError + 'static)> {
    let mut all = Vec::new();
    let mut next = Some(err);
    while let Some(current) = next {
        all.push(current);
        next = match current.downcast_ref::<std::io::Error>() {
            Some(io) => io.get_ref().map(|inner| inner as &(dyn StdError + 'static)),
            None => current.source(),
        };
    }
    all
}

fn has<T: StdError + 'static>(causes: &[&(dyn StdError + 'static)]) -> bool {
    causes.iter().any(|c| c.is::<T>())
}

/// The kind of the innermost `io::Error`: outer ones may be wrappers of
/// kind `Other`.
fn io_kind(causes: &[&(dyn StdError + 'static)]) -> Option<ErrorKind> {
    causes
        .iter()
        .rev()
        .find_map(|c| c.downcast_ref::<std::io::Error>())
        .map(std::io::Error::kind)
}

/// The connection ended before the answer's head: closed (hyper's
/// "incomplete message"), cancelled, or reset while the request was written
/// or awaited. Never a failure to connect.
fn closed_before_answer(err: &reqwest::Error) -> bool {
    if err.is_connect() || err.is_timeout() {
        return false;
    }
    let causes = causes(err);
    let closed = causes
        .iter()
        .filter_map(|c| c.downcast_ref::<hyper::Error>())
        .any(|h| h.is_incomplete_message() || h.is_canceled());
    closed
        || matches!(
            io_kind(&causes),
            Some(
                ErrorKind::ConnectionReset
                    | ErrorKind::ConnectionAborted
                    | ErrorKind::BrokenPipe
                    | ErrorKind::UnexpectedEof
            )
        )
}

/// Names a transport failure by the types in its chain. Messages never hold
/// the URL (it may be long) nor headers (they may hold tokens).
pub(crate) fn classify(err: reqwest::Error, url: &Url, proxy: &ProxySetting) -> TransportError {
    let err = err.without_url();
    let message = error_chain(&err);
    let causes = causes(&err);
    if has::<rustls::Error>(&causes) {
        return TransportError::Tls(message);
    }
    if has::<ConnectTimedOut>(&causes) {
        return TransportError::Connect(message);
    }
    let io = io_kind(&causes);
    let hyper_timeout = causes
        .iter()
        .filter_map(|c| c.downcast_ref::<hyper::Error>())
        .any(hyper::Error::is_timeout);
    if err.is_connect() {
        if *proxy != ProxySetting::Direct && io.is_none() {
            // The proxy answered the CONNECT, and not with 2xx: reqwest's
            // tunnel error carries no I/O cause.
            return TransportError::Proxy(format!("the proxy refused the tunnel ({message})"));
        }
        let tls_target = url.scheme() == "https";
        let broke_after_connecting = matches!(
            io,
            Some(
                ErrorKind::UnexpectedEof
                    | ErrorKind::ConnectionReset
                    | ErrorKind::ConnectionAborted
                    | ErrorKind::BrokenPipe
                    | ErrorKind::InvalidData
            )
        );
        return if tls_target && broke_after_connecting {
            TransportError::Tls(format!("during the TLS handshake: {message}"))
        } else {
            TransportError::Connect(message)
        };
    }
    if hyper_timeout || io == Some(ErrorKind::TimedOut) {
        return TransportError::Timeout;
    }
    TransportError::Connection(message)
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
