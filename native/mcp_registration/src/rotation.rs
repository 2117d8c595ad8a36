//! RFC 7592 §2.1: any management answer, a read included, may carry a new
//! `registration_access_token` (and `client_secret`); the client must then
//! discard the old one at once. An update reads before it writes (§2.2), so
//! the PUT goes out with the newest token, and when anything after that read
//! fails — a refusal, a broken answer, the deadline — the caller still gets
//! the read's answer with the new credentials, as
//! [`Error::CredentialsRotated`]. Without it the old token no longer works
//! and the new one is lost: the caller is locked out of its registration.
//!
//! A rotated `client_secret` alone (same token) is not detected: the library
//! is never given the old secret. It needs no rescue either: the token still
//! works, and a new read returns the current secret.

use serde_json::Value;

use crate::client::{Outcome, Secret};
use crate::error::Error;
use crate::redact::SentSecrets;
use crate::response::ClientInformation;

/// What a call has sent, and what an update's read handed out.
#[derive(Debug, Default)]
pub struct Progress {
    pub sent: SentSecrets,
    rotated: Option<ClientInformation>,
}

impl Progress {
    /// Takes in an update's read and returns the token to send the PUT with.
    /// A token in the read that differs from `sent` is a rotation: the read
    /// is kept, and its token is used.
    pub fn read(
        &mut self,
        info: ClientInformation,
        sent: Option<&Secret>,
    ) -> Result<Secret, Error> {
        let sent_token = sent.map(Secret::expose);
        let issued = info.document.get("registration_access_token").cloned();
        match issued {
            None => sent.cloned().ok_or_else(no_token),
            Some(Value::String(token)) if Some(token.as_str()) == sent_token => {
                Ok(sent.cloned().expect("equal to the sent token"))
            }
            Some(Value::String(token)) => {
                self.sent.add(&token);
                self.rotated = Some(info);
                Secret::new("registration_access_token", token).map_err(|_| {
                    Error::InvalidResponse(
                        "the read issued a new registration_access_token that cannot be sent in an Authorization header"
                            .into(),
                    )
                })
            }
            Some(other) => {
                self.rotated = Some(info);
                Err(Error::InvalidResponse(format!(
                    "the read issued a registration_access_token that is {}, not a string",
                    crate::response::json_type(&other)
                )))
            }
        }
    }

    /// The call's result, with sent credentials redacted from any refusal,
    /// and a failure after a rotation carrying the rotated credentials.
    pub fn settle(self, result: Result<Outcome, Error>) -> Result<Outcome, Error> {
        let result = result.map_err(|error| self.sent.scrub(error));
        match (result, self.rotated) {
            (Err(reason), Some(client)) => Err(Error::CredentialsRotated {
                client: Box::new(client),
                reason: Box::new(reason),
            }),
            // An update answer without a token: the read's new one is the one that works.
            (Ok(Outcome::Client(mut info)), Some(read)) => {
                if !info.document.contains_key("registration_access_token") {
                    if let Some(token) = read.document.get("registration_access_token") {
                        info.document
                            .insert("registration_access_token".into(), token.clone());
                    }
                }
                Ok(Outcome::Client(info))
            }
            (result, _) => result,
        }
    }
}

fn no_token() -> Error {
    Error::InvalidResponse("a management call needs a registration access token".into())
}
