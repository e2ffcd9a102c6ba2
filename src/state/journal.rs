//! The file-backed store: an append-only journal of JSON lines, made durable a batch at a time,
//! and compacted on run start into one snapshot record.
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
    /// Records written since the last fsync.
    unsynced: bool,
}

impl FileStore {
    /// The journal under `state_dir` (created with mode 0700 when writing).
    pub fn new(state_dir: &Path) -> Self {
        FileStore {
            path: state_dir.join("journal.jsonl"),
            file: None,
            unsynced: false,
        }
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    fn open(&mut self) -> Result<&mut File> {
        let path = self.path.clone();
        self.open_inner().map_err(|e| {
            color_eyre::eyre::eyre!("cannot write the journal {}: {e:#}", path.display())
        })
    }

    fn open_inner(&mut self) -> Result<&mut File> {
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
            } else if let Some(end) = torn_at(&self.path)? {
                // A kill -9 mid-write left a partial last record, never acknowledged: cut it off,
                // so the next record starts on a line of its own and no fragment stays behind.
                f.set_len(end)?;
                f.sync_data()?;
            }
            self.file = Some(f);
        }
        Ok(self.file.as_mut().expect("opened"))
    }
}

/// Where a torn last record starts (the file does not end with a newline), if there is one.
fn torn_at(path: &Path) -> Result<Option<u64>> {
    let text = std::fs::read(path)?;
    if text.is_empty() || text.ends_with(b"\n") {
        return Ok(None);
    }
    Ok(Some(
        text.iter()
            .rposition(|b| *b == b'\n')
            .map_or(0, |i| i as u64 + 1),
    ))
}

/// Create a directory (and parents) with mode 0700, and tighten an existing one.
pub fn ensure_private_dir(dir: &Path) -> Result<()> {
    use std::os::unix::fs::PermissionsExt;
    std::fs::create_dir_all(dir)
        .and_then(|()| std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700)))
        .map_err(|e| {
            color_eyre::eyre::eyre!("cannot create the state directory {}: {e}", dir.display())
        })?;
    Ok(())
}

/// Fold journal lines into `state`; `first_line` numbers the first one in warnings.
pub(super) fn fold(state: &mut State, text: &[u8], path: &Path, first_line: usize) {
    let lines: Vec<&[u8]> = text.split(|b| *b == b'\n').collect();
    let last = lines.iter().rposition(|l| !l.is_empty()).unwrap_or(0);
    for (i, line) in lines.iter().enumerate() {
        if line.is_empty() {
            continue;
        }
        match serde_json::from_slice::<Record>(line) {
            Ok(rec) => state.apply(&rec),
            // A torn last line (the process died mid-write) is not a record, and says nothing.
            Err(_) if i == last => {}
            // Anything else in the middle was damaged or written by someone else: say so.
            Err(e) => eprintln!(
                "warning: {}:{}: not a journal record, skipped ({e})",
                path.display(),
                first_line + i + 1
            ),
        }
    }
}

/// What the journal added up to at its first `len` bytes (written when a run ends), so readers
/// fold only the records after it. A cache: checked against the journal (same file, at least
/// that long, the same bytes before the cut) and ignored when it does not match.
#[derive(serde::Serialize, serde::Deserialize)]
struct Snapshot {
    inode: u64,
    len: u64,
    /// The journal's last bytes before `len` (hex), to notice a journal rewritten in place.
    tail: String,
    lines: usize,
    state: State,
}

const SNAPSHOT_TAIL: u64 = 64;

impl FileStore {
    fn snapshot_path(&self) -> PathBuf {
        self.path.with_file_name("snapshot.json")
    }

    /// The journal's state from the snapshot and the records after it, if the snapshot matches.
    fn load_from_snapshot(&self) -> Option<State> {
        use std::io::{Read, Seek, SeekFrom};
        use std::os::unix::fs::MetadataExt;
        let snap: Snapshot =
            serde_json::from_slice(&std::fs::read(self.snapshot_path()).ok()?).ok()?;
        let mut f = File::open(&self.path).ok()?;
        let meta = f.metadata().ok()?;
        if meta.ino() != snap.inode || meta.len() < snap.len {
            return None;
        }
        let from = snap.len.saturating_sub(SNAPSHOT_TAIL);
        f.seek(SeekFrom::Start(from)).ok()?;
        let mut rest = Vec::new();
        f.read_to_end(&mut rest).ok()?;
        let cut = (snap.len - from) as usize;
        if hex::encode(&rest[..cut]) != snap.tail {
            return None;
        }
        let mut state = snap.state;
        fold(&mut state, &rest[cut..], &self.path, snap.lines);
        Some(state)
    }

    /// Write the snapshot of the journal as it is now (best effort: it is only a cache).
    pub fn write_snapshot(&self) {
        use std::os::unix::fs::MetadataExt;
        let made = (|| -> Option<()> {
            let text = std::fs::read(&self.path).ok()?;
            // Only whole records: up to the last newline.
            let len = text.iter().rposition(|b| *b == b'\n').map_or(0, |i| i + 1);
            let mut state = State::default();
            fold(&mut state, &text[..len], &self.path, 0);
            let inode = std::fs::metadata(&self.path).ok()?.ino();
            let from = len.saturating_sub(SNAPSHOT_TAIL as usize);
            let snap = Snapshot {
                inode,
                len: len as u64,
                tail: hex::encode(&text[from..len]),
                lines: text[..len].iter().filter(|b| **b == b'\n').count(),
                state,
            };
            let tmp = self.snapshot_path().with_extension("json.tmp");
            std::fs::write(&tmp, serde_json::to_vec(&snap).ok()?).ok()?;
            std::fs::rename(&tmp, self.snapshot_path()).ok()
        })();
        if made.is_none() {
            tracing::debug!("cannot write the state snapshot");
        }
    }
}

impl Store for FileStore {
    fn write(&mut self, rec: &Record) -> Result<()> {
        let mut line = serde_json::to_vec(rec)?;
        line.push(b'\n');
        let path = self.path.clone();
        let f = self.open()?;
        // One write per record (O_APPEND): a kill leaves at most the last one torn.
        f.write_all(&line).map_err(|e| {
            color_eyre::eyre::eyre!("cannot write the journal {}: {e}", path.display())
        })?;
        self.unsynced = true;
        Ok(())
    }

    fn sync(&mut self) -> Result<()> {
        if !self.unsynced {
            return Ok(());
        }
        let path = self.path.clone();
        let f = self.open()?;
        f.sync_data().map_err(|e| {
            color_eyre::eyre::eyre!("cannot write the journal {}: {e}", path.display())
        })?;
        self.unsynced = false;
        Ok(())
    }

    fn sync_off_thread(&mut self) -> Result<Option<super::OffThreadSync>> {
        if !self.unsynced {
            return Ok(Some(Box::new(|| Ok(()))));
        }
        let path = self.path.clone();
        // The same open file: an fsync covers every record written to it before the call.
        let file = self.open()?.try_clone().map_err(|e| {
            color_eyre::eyre::eyre!("cannot write the journal {}: {e}", path.display())
        })?;
        self.unsynced = false;
        Ok(Some(Box::new(move || {
            file.sync_data().map_err(|e| {
                color_eyre::eyre::eyre!("cannot write the journal {}: {e}", path.display())
            })
        })))
    }

    fn load(&self) -> Result<State> {
        if let Some(state) = self.load_from_snapshot() {
            return Ok(state);
        }
        let mut state = State::default();
        let text = match std::fs::read(&self.path) {
            Ok(t) => t,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(state),
            Err(e) => {
                return Err(color_eyre::eyre::eyre!(
                    "cannot read the journal {}: {e}",
                    self.path.display()
                ));
            }
        };
        fold(&mut state, &text, &self.path, 0);
        Ok(state)
    }

    fn compact(&mut self) -> Result<(u64, u64)> {
        let before = std::fs::metadata(&self.path).map(|m| m.len()).unwrap_or(0);
        if before == 0 {
            return Ok((0, 0));
        }
        let state = self.load()?;
        let after = self.replace_with(&state)?;
        Ok((before, after))
    }

    fn finished(&self) {
        self.write_snapshot();
    }

    fn describe(&self) -> String {
        self.path.display().to_string()
    }
}

impl FileStore {
    /// Make the journal one snapshot record of `state`, atomically. Returns its size.
    pub fn replace_with(&mut self, state: &State) -> Result<u64> {
        let state = state.clone();
        let mut line = serde_json::to_vec(&Record::Snapshot {
            at: super::now(),
            state: Box::new(state),
        })?;
        line.push(b'\n');
        let tmp = self.path.with_extension("jsonl.compact");
        let write = || -> std::io::Result<()> {
            let mut f = File::create(&tmp)?;
            f.write_all(&line)?;
            f.sync_all()?;
            std::fs::rename(&tmp, &self.path)?;
            // The rename is durable once the directory is.
            File::open(self.path.parent().unwrap_or(Path::new(".")))?.sync_all()
        };
        write().map_err(|e| {
            color_eyre::eyre::eyre!("cannot compact the journal {}: {e}", self.path.display())
        })?;
        // Appends go to the new file from now on.
        self.file = None;
        self.unsynced = false;
        let _ = std::fs::remove_file(self.snapshot_path());
        Ok(line.len() as u64)
    }

    /// Set the journal aside (its records moved to another backend): `journal.migrated.jsonl`.
    pub fn set_aside(&mut self) -> Result<()> {
        self.file = None;
        let _ = std::fs::remove_file(self.snapshot_path());
        match std::fs::rename(
            &self.path,
            self.path.with_file_name("journal.migrated.jsonl"),
        ) {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(color_eyre::eyre::eyre!(
                "cannot set the journal {} aside: {e}",
                self.path.display()
            )),
        }
    }

    /// Whether the journal holds any record.
    pub fn is_empty(&self) -> bool {
        std::fs::metadata(&self.path).map_or(true, |m| m.len() == 0)
    }
}
