//! Files that hold credentials (the Mix tasks' `--output` and write-back):
//! readable by the owner only from the moment they exist.
//!
//! The contents go into a new file in the same directory, created with
//! `O_CREAT | O_EXCL` and mode 0600 in one `open(2)` (the umask can only
//! take bits away), then renamed over the destination. There is no moment
//! when the secret sits in a file someone else may open, and a reader who
//! held the old file open keeps seeing the old inode, never the new secret.
//! A leftover symlink or file at the temporary name makes the open fail
//! instead of being followed. Runs on a dirty I/O scheduler.
//!
//! `create_private_dir` makes a directory with mode 0700 in one `mkdir(2)`:
//! the DETS client store (`ClientStore.DETS`) creates its file in such a
//! directory, where nobody else can open it, before moving it into place.

use std::fs::{self, DirBuilder, OpenOptions};
use std::io::{self, Write};
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::time::{SystemTime, UNIX_EPOCH};

use rustler::{Binary, Encoder, Env, Term};

use crate::atoms;

/// `:ok`, or `{:error, message}` naming what failed.
#[rustler::nif(schedule = "DirtyIo")]
fn write_private_file<'a>(env: Env<'a>, path: String, contents: Binary<'a>) -> Term<'a> {
    match write(Path::new(&path), contents.as_slice()) {
        Ok(()) => atoms::ok().encode(env),
        Err(e) => (atoms::error(), e.to_string()).encode(env),
    }
}

/// `:ok`, or `{:error, message}`; fails when `path` already exists.
#[rustler::nif(schedule = "DirtyIo")]
fn create_private_dir(env: Env<'_>, path: String) -> Term<'_> {
    match DirBuilder::new().mode(0o700).create(&path) {
        Ok(()) => atoms::ok().encode(env),
        Err(e) => (atoms::error(), e.to_string()).encode(env),
    }
}

fn write(path: &Path, contents: &[u8]) -> io::Result<()> {
    let (temp, mut file) = create_temp(path)?;
    let written = file
        .write_all(contents)
        .and_then(|()| file.sync_all())
        .and_then(|()| fs::rename(&temp, path));
    if written.is_err() {
        let _ = fs::remove_file(&temp);
    }
    written
}

fn create_temp(path: &Path) -> io::Result<(PathBuf, fs::File)> {
    let name = path
        .file_name()
        .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidInput, "the path names no file"))?
        .to_string_lossy()
        .into_owned();
    let mut last = None;
    for attempt in 0..8u32 {
        let nanos = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.subsec_nanos());
        let temp = path.with_file_name(format!(
            ".{name}.{}.{nanos}.{attempt}.tmp",
            std::process::id()
        ));
        match OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&temp)
        {
            Ok(file) => return Ok((temp, file)),
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => last = Some(e),
            Err(e) => return Err(e),
        }
    }
    Err(last.unwrap_or_else(|| io::Error::other("no free temporary name")))
}
