//! Client ID Metadata Documents (draft-ietf-oauth-client-id-metadata-document-00
//! §3, §4.1): the NIF that builds the document a client serves at its
//! `client_id` URL. The rules live in
//! `mcp_registration::client_id_metadata_document`; this only converts terms.
//! The metadata map is the caller's and may be as large as a request map
//! (`budget::REQUEST`), so this runs on a dirty CPU scheduler.

use crate::etf;
use mcp_registration::client_id_metadata_document;
use rustler::{Binary, Encoder, Env, Term};
use serde_json::Value;

use crate::atoms;
use crate::budget;
use crate::convert;

/// `client_metadata_document(url, metadata, allow_loopback_http)`:
/// `{:ok, map_with_string_keys}` or `{:error, reason}`.
#[rustler::nif(schedule = "DirtyCpu")]
fn client_metadata_document<'a>(
    env: Env<'a>,
    url: Term<'a>,
    metadata: Term<'a>,
    allow_loopback_http: bool,
) -> Term<'a> {
    let result = url_arg(env, url).and_then(|url| {
        let metadata = convert::map_to_json(env, metadata, "client_metadata", budget::REQUEST)
            .map_err(|refusal| refusal.into_reason(env))?;
        client_id_metadata_document::document(&url, metadata, allow_loopback_http)
            .map_err(|e| convert::request_reason(env, e))
    });
    match result {
        Ok(doc) => (
            atoms::ok(),
            convert::from_etf(env, &etf::json(&Value::Object(doc))),
        )
            .encode(env),
        Err(reason) => (atoms::error(), reason).encode(env),
    }
}

/// `loopback_url(url)`: whether `url` names a loopback host. The discovery
/// flow asks this to decide whether a document URL may be loopback http, so
/// that the rule lives only in `mcp_registration::uri`.
#[rustler::nif]
fn loopback_url(url: Term) -> bool {
    crate::nifs::string_arg(url)
        .and_then(Result::ok)
        .is_some_and(|url| mcp_registration::uri::names_loopback_host(&url))
}

fn url_arg<'a>(env: Env<'a>, term: Term<'a>) -> Result<String, Term<'a>> {
    Binary::from_term(term)
        .ok()
        .and_then(|b| std::str::from_utf8(b.as_slice()).ok().map(str::to_owned))
        .ok_or_else(|| {
            convert::invalid_field(env, "client_id", "must be a string holding an https URL")
        })
}
