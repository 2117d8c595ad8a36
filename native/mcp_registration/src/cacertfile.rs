//! The `cacertfile` option: a PEM bundle (RFC 7468 §5) of X.509 CA
//! certificates (RFC 5280) trusted in addition to the built-in roots.
//!
//! The file is never touched on an async worker: it is looked at and read on
//! tokio's blocking pool, inside the call's deadline, and only when it is a
//! regular file no larger than [`MAX_CACERTFILE_BYTES`], so a FIFO, a device
//! or a huge file is refused instead of wedging or filling the runtime.
//! A file is known by its identity (path, inode, size, modification and
//! change times): a changed file is read again by the next call, without
//! restarting anything.

use std::fs::{File, Metadata, OpenOptions};
use std::io::Read;
use std::path::{Path, PathBuf};

use rustls::pki_types::pem::{PemObject, SectionKind};
use rustls::pki_types::CertificateDer;

use crate::error::TransportError;

/// The largest CA file read. Mozilla's whole root bundle is about 220 KB.
pub const MAX_CACERTFILE_BYTES: u64 = 4 * 1024 * 1024;

/// One version of one CA file.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct CaIdentity {
    path: PathBuf,
    version: Version,
}

/// What tells two versions of a file apart without reading it.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
struct Version {
    device: u64,
    inode: u64,
    len: u64,
    modified: (i64, i64),
    changed: (i64, i64),
}

impl Version {
    #[cfg(unix)]
    fn of(metadata: &Metadata) -> Self {
        use std::os::unix::fs::MetadataExt;
        Self {
            device: metadata.dev(),
            inode: metadata.ino(),
            len: metadata.len(),
            modified: (metadata.mtime(), metadata.mtime_nsec()),
            changed: (metadata.ctime(), metadata.ctime_nsec()),
        }
    }

    #[cfg(not(unix))]
    fn of(metadata: &Metadata) -> Self {
        let nanos = |t: std::io::Result<std::time::SystemTime>| {
            t.ok()
                .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
                .map_or((0, 0), |d| {
                    (d.as_secs() as i64, i64::from(d.subsec_nanos()))
                })
        };
        Self {
            device: 0,
            inode: 0,
            len: metadata.len(),
            modified: nanos(metadata.modified()),
            changed: nanos(metadata.created()),
        }
    }
}

/// The certificates of one version of a CA file, checked to be X.509.
#[derive(Debug)]
pub struct CaBundle {
    pub path: PathBuf,
    pub identity: CaIdentity,
    pub certificates: Vec<CertificateDer<'static>>,
}

/// The file's current identity, without reading it. Refuses what is not a
/// regular file of an acceptable size.
pub async fn identify(path: &Path) -> Result<CaIdentity, TransportError> {
    let path = path.to_owned();
    blocking(path.clone(), move || {
        let metadata = std::fs::metadata(&path).map_err(|e| refused(&path, e))?;
        check(&path, &metadata)?;
        Ok(CaIdentity {
            version: Version::of(&metadata),
            path,
        })
    })
    .await
}

/// Reads and checks the file.
pub async fn load(path: &Path) -> Result<CaBundle, TransportError> {
    let path = path.to_owned();
    blocking(path.clone(), move || {
        let (metadata, bytes) = read_capped(&path)?;
        let certificates = certificates(&bytes).map_err(|why| refused(&path, why))?;
        Ok(CaBundle {
            identity: CaIdentity {
                version: Version::of(&metadata),
                path: path.clone(),
            },
            path,
            certificates,
        })
    })
    .await
}

async fn blocking<T: Send + 'static>(
    path: PathBuf,
    work: impl FnOnce() -> Result<T, TransportError> + Send + 'static,
) -> Result<T, TransportError> {
    tokio::task::spawn_blocking(work)
        .await
        .unwrap_or_else(|_| Err(refused(&path, "reading it failed")))
}

fn refused(path: &Path, why: impl std::fmt::Display) -> TransportError {
    TransportError::CaCertFile(format!("{}: {why}", path.display()))
}

fn check(path: &Path, metadata: &Metadata) -> Result<(), TransportError> {
    if !metadata.is_file() {
        return Err(refused(path, "not a regular file"));
    }
    if metadata.len() > MAX_CACERTFILE_BYTES {
        return Err(refused(
            path,
            format!("larger than {MAX_CACERTFILE_BYTES} bytes"),
        ));
    }
    Ok(())
}

/// Opens without blocking (a FIFO swapped in after [`identify`] must not
/// wait for a writer), checks the opened file, reads at most the cap.
fn read_capped(path: &Path) -> Result<(Metadata, Vec<u8>), TransportError> {
    let mut options = OpenOptions::new();
    options.read(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        options.custom_flags(libc::O_NONBLOCK);
    }
    let file: File = options.open(path).map_err(|e| refused(path, e))?;
    let metadata = file.metadata().map_err(|e| refused(path, e))?;
    check(path, &metadata)?;
    let mut bytes = Vec::with_capacity(metadata.len() as usize);
    file.take(MAX_CACERTFILE_BYTES + 1)
        .read_to_end(&mut bytes)
        .map_err(|e| refused(path, e))?;
    if bytes.len() as u64 > MAX_CACERTFILE_BYTES {
        return Err(refused(
            path,
            format!("larger than {MAX_CACERTFILE_BYTES} bytes"),
        ));
    }
    Ok((metadata, bytes))
}

/// Every PEM section must be a certificate that parses as X.509.
fn certificates(pem: &[u8]) -> Result<Vec<CertificateDer<'static>>, String> {
    let mut certificates = Vec::new();
    for (index, section) in <(SectionKind, Vec<u8>)>::pem_slice_iter(pem).enumerate() {
        let position = index + 1;
        // The PEM error is not shown: it could quote the file's bytes.
        let (kind, der) = section.map_err(|_| format!("PEM section {position} is malformed"))?;
        if kind != SectionKind::Certificate {
            return Err(format!(
                "PEM section {position} is a {}, not a CERTIFICATE",
                label(kind)
            ));
        }
        let certificate = CertificateDer::from(der);
        rustls::RootCertStore::empty()
            .add(certificate.clone())
            .map_err(|e| {
                format!("PEM section {position} is not a valid X.509 certificate ({e})")
            })?;
        certificates.push(certificate);
    }
    if certificates.is_empty() {
        return Err("no PEM certificate found".into());
    }
    Ok(certificates)
}

fn label(kind: SectionKind) -> &'static str {
    match kind {
        SectionKind::PublicKey => "PUBLIC KEY",
        SectionKind::RsaPrivateKey => "RSA PRIVATE KEY",
        SectionKind::PrivateKey => "PRIVATE KEY",
        SectionKind::EcPrivateKey => "EC PRIVATE KEY",
        SectionKind::Crl => "X509 CRL",
        SectionKind::Csr => "CERTIFICATE REQUEST",
        _ => "section of another kind",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pem_bundles_hold_only_certificates() {
        assert_eq!(
            certificates(b"not pem at all\n").unwrap_err(),
            "no PEM certificate found"
        );
        let key = b"-----BEGIN EC PRIVATE KEY-----\nAAEC\n-----END EC PRIVATE KEY-----\n";
        assert!(certificates(key).unwrap_err().contains("EC PRIVATE KEY"));
        let garbage = b"-----BEGIN CERTIFICATE-----\nAAECAwQF\n-----END CERTIFICATE-----\n";
        assert!(certificates(garbage)
            .unwrap_err()
            .contains("not a valid X.509 certificate"));
    }
}
