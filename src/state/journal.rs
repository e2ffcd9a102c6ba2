//! The file-backed store: an append-only journal of JSON lines, fsynced after every record.
//!
//! A `kill -9` at any instant leaves at most one torn last line, which loading ignores: every record
//! that was acknowledged is on disk.

use std::fs::{File, OpenOptions};
use std::io::Write;
use std::path::{Path, PathBuf};

use super::{Record, State, Store};
use crate::error::Result;

pub struct FileStore {
    path: PathBuf,
    file: Option<File>,
}

impl FileStore {
    /// The journal under `state_dir` (created with mode 0700 when writing).
    pub fn new(state_dir: &Path) -> Self {
        FileStore {
            path: state_dir.join("journal.jsonl"),
            file: None,
        }
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    fn open(&mut self) -> Result<&mut File> {
        if self.file.is_none() {
            let dir = self.path.parent().unwrap_or(Path::new("."));
            ensure_private_dir(dir)?;
            let existed = self.path.exists();
            let f = OpenOptions::new()
                .create(true)
                .append(true)
                .open(&self.path)?;
            if !existed {
                // Make the new directory entry durable too.
                File::open(dir)?.sync_all()?;
            } else if ends_torn(&self.path)? {
                // A kill -9 mid-write left a partial last line: end it, so the next record starts
                // on a line of its own instead of being glued to the fragment and lost.
                (&f).write_all(b"\n")?;
                f.sync_data()?;
            }
            self.file = Some(f);
        }
        Ok(self.file.as_mut().expect("opened"))
    }
}

/// Does the file end without a newline (a torn last record)?
fn ends_torn(path: &Path) -> Result<bool> {
    use std::io::{Read, Seek, SeekFrom};
    let mut f = File::open(path)?;
    let len = f.metadata()?.len();
    if len == 0 {
        return Ok(false);
    }
    f.seek(SeekFrom::Start(len - 1))?;
    let mut last = [0u8; 1];
    f.read_exact(&mut last)?;
    Ok(last[0] != b'\n')
}

/// Create a directory (and parents) with mode 0700, and tighten an existing one.
pub fn ensure_private_dir(dir: &Path) -> Result<()> {
    use std::os::unix::fs::PermissionsExt;
    std::fs::create_dir_all(dir)?;
    std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700))?;
    Ok(())
}

impl Store for FileStore {
    fn append(&mut self, rec: &Record) -> Result<()> {
        let mut line = serde_json::to_vec(rec)?;
        line.push(b'\n');
        let f = self.open()?;
        f.write_all(&line)?;
        f.sync_data()?;
        Ok(())
    }

    fn load(&self) -> Result<State> {
        let mut state = State::default();
        let text = match std::fs::read(&self.path) {
            Ok(t) => t,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(state),
            Err(e) => return Err(e.into()),
        };
        for line in text.split(|b| *b == b'\n') {
            if line.is_empty() {
                continue;
            }
            // A torn last line (the process died mid-write) is not a record.
            if let Ok(rec) = serde_json::from_slice::<Record>(line) {
                state.apply(&rec);
            }
        }
        Ok(state)
    }
}
