//! The registered clients, in memory.
//!
//! A fixed number of shards, each a `RwLock<HashMap>`, so that many clients
//! registering and reading at once rarely contend. Locks are only ever held
//! for a map operation or a few microseconds of checking, never across an
//! `.await`.

use std::collections::hash_map::{Entry, RandomState};
use std::collections::HashMap;
use std::fmt;
use std::hash::BuildHasher;
use std::sync::{Arc, RwLock, RwLockReadGuard, RwLockWriteGuard};

use serde_json::{Map, Value};

use crate::response::ClientInformation;

const SHARDS: usize = 16;

/// An issued client secret. `expires_at` is seconds since the epoch, `0` for
/// never (RFC 7591 §3.2.1). An expired secret is kept and still reported.
#[derive(Clone, PartialEq, Eq)]
pub struct IssuedSecret {
    pub value: String,
    pub expires_at: i64,
}

impl fmt::Debug for IssuedSecret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("IssuedSecret")
            .field("value", &"<redacted>")
            .field("expires_at", &self.expires_at)
            .finish()
    }
}

/// One registered client.
#[derive(Clone, PartialEq)]
pub struct ClientRecord {
    pub client_id: String,
    pub client_id_issued_at: i64,
    pub client_secret: Option<IssuedSecret>,
    pub registration_access_token: String,
    /// The client metadata, checked and with the defaults filled in.
    pub metadata: Map<String, Value>,
}

impl fmt::Debug for ClientRecord {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ClientRecord")
            .field("client_id", &self.client_id)
            .field("client_id_issued_at", &self.client_id_issued_at)
            .field("client_secret", &self.client_secret)
            .field("registration_access_token", &"<redacted>")
            .field("metadata", &self.metadata)
            .finish()
    }
}

impl ClientRecord {
    /// The full client information response (RFC 7591 §3.2.1, RFC 7592 §3):
    /// the metadata plus everything the server issued.
    pub fn information(&self, registration_client_uri: String) -> ClientInformation {
        let mut document = self.metadata.clone();
        document.insert("client_id".into(), Value::from(self.client_id.as_str()));
        document.insert(
            "client_id_issued_at".into(),
            Value::from(self.client_id_issued_at),
        );
        if let Some(secret) = &self.client_secret {
            document.insert("client_secret".into(), Value::from(secret.value.as_str()));
            document.insert(
                "client_secret_expires_at".into(),
                Value::from(secret.expires_at),
            );
        }
        document.insert(
            "registration_access_token".into(),
            Value::from(self.registration_access_token.as_str()),
        );
        document.insert(
            "registration_client_uri".into(),
            Value::from(registration_client_uri),
        );
        ClientInformation { document }
    }
}

/// Why a change to a registration was not made.
#[derive(Debug, PartialEq, Eq)]
pub enum Refused<E> {
    /// No client with this id.
    Unknown,
    /// The check refused the change.
    Check(E),
}

type Shard = RwLock<HashMap<String, Arc<ClientRecord>>>;

/// The registered clients of one server.
pub struct Store {
    shards: Box<[Shard]>,
    hasher: RandomState,
    registration_endpoint: String,
}

impl fmt::Debug for Store {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Store")
            .field("registration_endpoint", &self.registration_endpoint)
            .field("count", &self.count())
            .finish()
    }
}

impl Store {
    /// An empty store whose clients live under `registration_endpoint`
    /// (`<base>/register`).
    pub fn new(registration_endpoint: String) -> Self {
        Self {
            shards: (0..SHARDS).map(|_| Shard::default()).collect(),
            hasher: RandomState::new(),
            registration_endpoint,
        }
    }

    /// `<registration endpoint>/<client_id>` (RFC 7592 §1).
    pub fn registration_client_uri(&self, client_id: &str) -> String {
        format!("{}/{client_id}", self.registration_endpoint)
    }

    /// The client information of one client.
    pub fn lookup(&self, client_id: &str) -> Option<ClientInformation> {
        self.get(client_id)
            .map(|record| record.information(self.registration_client_uri(client_id)))
    }

    /// The client information of every client, ordered by `client_id_issued_at`
    /// (whole seconds), then `client_id`.
    pub fn list(&self) -> Vec<ClientInformation> {
        let mut records: Vec<Arc<ClientRecord>> = self
            .shards
            .iter()
            .flat_map(|shard| read(shard).values().cloned().collect::<Vec<_>>())
            .collect();
        records.sort_by(|a, b| {
            (a.client_id_issued_at, &a.client_id).cmp(&(b.client_id_issued_at, &b.client_id))
        });
        records
            .iter()
            .map(|r| r.information(self.registration_client_uri(&r.client_id)))
            .collect()
    }

    /// How many clients are registered.
    pub fn count(&self) -> usize {
        self.shards.iter().map(|shard| read(shard).len()).sum()
    }

    /// The record of one client.
    pub fn get(&self, client_id: &str) -> Option<Arc<ClientRecord>> {
        read(self.shard(client_id)).get(client_id).cloned()
    }

    /// Adds a new client. If its id is already taken, nothing changes and
    /// the record comes back.
    pub fn insert(&self, record: ClientRecord) -> Result<Arc<ClientRecord>, ClientRecord> {
        match write(self.shard(&record.client_id)).entry(record.client_id.clone()) {
            Entry::Occupied(_) => Err(record),
            Entry::Vacant(slot) => Ok(Arc::clone(slot.insert(Arc::new(record)))),
        }
    }

    /// Replaces a client's record with what `change` makes of the current
    /// one, atomically: no other change to this client can come in between.
    /// `change` runs under the shard's write lock, so it must be quick.
    pub fn update<E>(
        &self,
        client_id: &str,
        change: impl FnOnce(&ClientRecord) -> Result<ClientRecord, E>,
    ) -> Result<Arc<ClientRecord>, Refused<E>> {
        let mut shard = write(self.shard(client_id));
        let slot = shard.get_mut(client_id).ok_or(Refused::Unknown)?;
        let record = Arc::new(change(slot).map_err(Refused::Check)?);
        *slot = Arc::clone(&record);
        Ok(record)
    }

    /// Removes a client if `allow` accepts its current record.
    pub fn remove_if(
        &self,
        client_id: &str,
        allow: impl FnOnce(&ClientRecord) -> bool,
    ) -> Result<Arc<ClientRecord>, Refused<()>> {
        let mut shard = write(self.shard(client_id));
        match shard.entry(client_id.to_owned()) {
            Entry::Vacant(_) => Err(Refused::Unknown),
            Entry::Occupied(entry) if allow(entry.get()) => Ok(entry.remove()),
            Entry::Occupied(_) => Err(Refused::Check(())),
        }
    }

    fn shard(&self, client_id: &str) -> &Shard {
        let index = self.hasher.hash_one(client_id) as usize % self.shards.len();
        &self.shards[index]
    }
}

/// A panic while a lock was held cannot leave a record half-written (records
/// are replaced whole), so a poisoned lock is still safe to use.
fn read(shard: &Shard) -> RwLockReadGuard<'_, HashMap<String, Arc<ClientRecord>>> {
    shard
        .read()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

fn write(shard: &Shard) -> RwLockWriteGuard<'_, HashMap<String, Arc<ClientRecord>>> {
    shard
        .write()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn record(id: &str, issued_at: i64) -> ClientRecord {
        ClientRecord {
            client_id: id.into(),
            client_id_issued_at: issued_at,
            client_secret: Some(IssuedSecret {
                value: "s3cr3t".into(),
                expires_at: 0,
            }),
            registration_access_token: "t0k3n".into(),
            metadata: json!({"client_name": "x"}).as_object().unwrap().clone(),
        }
    }

    #[test]
    fn insert_lookup_list_count() {
        let store = Store::new("http://127.0.0.1:1/register".into());
        assert!(store.insert(record("b", 2)).is_ok());
        assert!(store.insert(record("a", 2)).is_ok());
        assert!(store.insert(record("c", 1)).is_ok());
        let taken = store.insert(record("a", 3)).unwrap_err();
        assert_eq!(taken.client_id_issued_at, 3, "ids are unique");
        assert_eq!(store.count(), 3);
        let ids: Vec<_> = store
            .list()
            .iter()
            .map(|i| i.client_id().to_owned())
            .collect();
        assert_eq!(ids, ["c", "a", "b"]);
        let info = store.lookup("a").unwrap();
        assert_eq!(
            info.document["registration_client_uri"],
            json!("http://127.0.0.1:1/register/a")
        );
        assert_eq!(info.document["client_secret_expires_at"], json!(0));
        assert_eq!(info.document["client_name"], json!("x"));
        assert!(store.lookup("zz").is_none());
    }

    #[test]
    fn update_and_remove_are_checked() {
        let store = Store::new("http://h/register".into());
        store.insert(record("a", 1)).unwrap();
        assert_eq!(
            store
                .update("nope", |r| Ok::<_, ()>(r.clone()))
                .unwrap_err(),
            Refused::Unknown
        );
        assert_eq!(
            store.update("a", |_| Err("no")).unwrap_err(),
            Refused::Check("no")
        );
        let updated = store
            .update("a", |r| {
                Ok::<_, ()>(ClientRecord {
                    registration_access_token: "new".into(),
                    ..r.clone()
                })
            })
            .unwrap();
        assert_eq!(updated.registration_access_token, "new");
        assert_eq!(store.get("a").unwrap().registration_access_token, "new");
        assert_eq!(store.remove_if("a", |_| false), Err(Refused::Check(())));
        assert!(store.remove_if("a", |_| true).is_ok());
        assert_eq!(store.remove_if("a", |_| true), Err(Refused::Unknown));
        assert_eq!(store.count(), 0);
    }

    #[test]
    fn debug_output_hides_credentials() {
        let text = format!("{:?}", record("a", 1));
        assert!(
            !text.contains("s3cr3t") && !text.contains("t0k3n"),
            "{text}"
        );
    }
}
