//! The unit index: every unit's id, phase, kind and fingerprint in graph order, kept in the state
//! directory under a key of everything they are computed from (the plan file, each phase file,
//! the state directory), so `status` answers from the index and the journal's snapshot without
//! parsing and rendering thousands of steps again.
//!
//! Owns the index file (`index.json`: the key on the first line, the phases and units on the
//! second). It is
//! a cache: written by a run and by a `status` that had to load the workspace, read only when
//! the key matches; anything else falls back to loading the workspace.

use std::io::{BufRead, Write};
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::dag::Work;
use crate::workspace::Workspace;

/// One unit as `status` needs it.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Entry {
    pub id: String,
    pub phase: String,
    pub gate: bool,
    pub fingerprint: String,
}

/// The phases (id, title) and units of a workspace, in graph order.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Index {
    pub phases: Vec<(String, String)>,
    pub units: Vec<Entry>,
}

impl Index {
    pub fn of(ws: &Workspace) -> Index {
        Index {
            phases: (ws.dag.phases.iter())
                .map(|p| (p.id.clone(), p.title.clone()))
                .collect(),
            units: (ws.dag.work.iter())
                .map(|w| Entry {
                    id: w.id().to_string(),
                    phase: w.phase().to_string(),
                    gate: matches!(w, Work::Gate(_)),
                    fingerprint: w.fingerprint().to_string(),
                })
                .collect(),
        }
    }
}

fn path(state_dir: &Path) -> PathBuf {
    state_dir.join("index.json")
}

/// The key of the inputs: the plan file's and every phase file's name and bytes, and the state
/// directory. None when a file cannot be read (then the workspace is loaded, and says why).
pub fn key(plan_file: &Path, phases_dir: &Path, state_dir: &Path) -> Option<String> {
    let mut h = Sha256::new();
    h.update(std::fs::read(plan_file).ok()?);
    let mut files: Vec<PathBuf> = std::fs::read_dir(phases_dir)
        .ok()?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| matches!(p.extension().and_then(|e| e.to_str()), Some("yaml" | "yml")))
        .collect();
    files.sort();
    for f in files {
        h.update(b"\0");
        h.update(f.file_name()?.as_encoded_bytes());
        h.update(b"\0");
        h.update(std::fs::read(&f).ok()?);
    }
    h.update(b"\0");
    h.update(
        crate::dag::absolute_dir(state_dir)
            .as_os_str()
            .as_encoded_bytes(),
    );
    Some(hex::encode(h.finalize()))
}

/// The index whose key is `key`, if that is the index there.
pub fn read(state_dir: &Path, key: &str) -> Option<Index> {
    let f = std::fs::File::open(path(state_dir)).ok()?;
    let mut r = std::io::BufReader::new(f);
    let mut first = String::new();
    r.read_line(&mut first).ok()?;
    if first.trim_end() != key {
        return None;
    }
    // Read whole, then parsed from the slice (much faster than from the reader).
    let mut rest = Vec::new();
    std::io::Read::read_to_end(&mut r, &mut rest).ok()?;
    serde_json::from_slice(&rest).ok()
}

/// Keep the workspace's units under its key, unless the index there already has that key. Only
/// where a state directory exists (a cache never creates one). Best effort: a failure to write
/// only costs the next `status` a full load.
pub fn write(ws: &Workspace, plan_file: &Path, phases_dir: &Path) {
    if !ws.state_dir.is_dir() {
        return;
    }
    let Some(key) = key(plan_file, phases_dir, &ws.state_dir) else {
        return;
    };
    let current = std::fs::File::open(path(&ws.state_dir)).ok().and_then(|f| {
        let mut first = String::new();
        std::io::BufReader::new(f).read_line(&mut first).ok()?;
        Some(first.trim_end().to_string())
    });
    if current.as_deref() == Some(key.as_str()) {
        return;
    }
    let entries = Index::of(ws);
    let tmp = ws.state_dir.join("index.json.tmp");
    let written = (|| -> std::io::Result<()> {
        let mut f = std::io::BufWriter::new(std::fs::File::create(&tmp)?);
        writeln!(f, "{key}")?;
        serde_json::to_writer(&mut f, &entries)?;
        f.flush()?;
        std::fs::rename(&tmp, path(&ws.state_dir))
    })();
    if let Err(e) = written {
        tracing::debug!("cannot write the unit index: {e}");
        let _ = std::fs::remove_file(&tmp);
    }
}
