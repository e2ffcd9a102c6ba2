//! One run per state directory: an OS lock (`File::try_lock`) on `<state>/lock`, with the holder's
//! pid, host, start time and run id written beside it in `<state>/lock.json` for error messages.
//!
//! The OS releases the lock when its holder dies, so a lock left by a killed run is taken over
//! safely; the stale holder file is simply overwritten.

use std::fs::{File, OpenOptions};
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct Holder {
    pub pid: u32,
    pub host: String,
    pub started: String,
    pub run_id: String,
    /// `/etc/machine-id` (empty where there is none): two machines may share a host name.
    #[serde(default)]
    pub machine: String,
}

impl Holder {
    /// This process, running `run_id`, from now.
    pub fn this(run_id: &str) -> Holder {
        Holder {
            pid: std::process::id(),
            host: hostname(),
            started: super::now(),
            run_id: run_id.to_string(),
            machine: machine_id(),
        }
    }
}

impl std::fmt::Display for Holder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "pid {} on {}, since {} (run {})",
            self.pid, self.host, self.started, self.run_id
        )
    }
}

#[derive(Debug)]
pub enum LockError {
    /// Another live process holds it.
    Held(Option<Holder>),
    Io(std::io::Error),
}

/// A held lock; released on drop.
pub struct Lock {
    file: File,
    info: PathBuf,
    /// The previous holder, if its record was stale (it died without releasing).
    pub took_over: Option<Holder>,
}

/// Is a process with this pid alive on this host (and not a zombie)?
pub fn pid_alive(pid: u32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Ok(s) => !s
            .rsplit_once(')')
            .is_some_and(|(_, rest)| rest.trim_start().starts_with('Z')),
        Err(_) => nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid as i32), None).is_ok(),
    }
}

/// This machine's id (`/etc/machine-id`), or empty.
pub fn machine_id() -> String {
    std::fs::read_to_string("/etc/machine-id")
        .map(|s| s.trim().to_string())
        .unwrap_or_default()
}

pub fn hostname() -> String {
    nix::unistd::gethostname()
        .ok()
        .and_then(|h| h.into_string().ok())
        .unwrap_or_else(|| "unknown".into())
}

fn read_holder(path: &Path) -> Option<Holder> {
    std::fs::read(path)
        .ok()
        .and_then(|b| serde_json::from_slice(&b).ok())
}

impl Lock {
    pub fn acquire(state_dir: &Path, run_id: &str) -> Result<Lock, LockError> {
        super::journal::ensure_private_dir(state_dir)
            .map_err(|e| LockError::Io(std::io::Error::other(e.to_string())))?;
        let path = state_dir.join("lock");
        let info = state_dir.join("lock.json");
        let file = OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&path)
            .map_err(LockError::Io)?;
        match file.try_lock() {
            Ok(()) => {}
            Err(std::fs::TryLockError::WouldBlock) => {
                return Err(LockError::Held(read_holder(&info)));
            }
            Err(std::fs::TryLockError::Error(e)) => return Err(LockError::Io(e)),
        }
        let previous = read_holder(&info);
        let holder = Holder::this(run_id);
        std::fs::write(
            &info,
            serde_json::to_vec_pretty(&holder).unwrap_or_default(),
        )
        .map_err(LockError::Io)?;
        Ok(Lock {
            file,
            info,
            took_over: previous,
        })
    }

    /// Who holds the lock now, if anyone does.
    pub fn holder(state_dir: &Path) -> Option<Holder> {
        let path = state_dir.join("lock");
        let file = OpenOptions::new().write(true).open(&path).ok()?;
        match file.try_lock() {
            Ok(()) => None,
            Err(_) => read_holder(&state_dir.join("lock.json")),
        }
    }

    /// Remove the holder record (`bootstrap unlock`).
    pub fn clear(state_dir: &Path) -> std::io::Result<Option<Holder>> {
        let info = state_dir.join("lock.json");
        let h = read_holder(&info);
        match std::fs::remove_file(&info) {
            Ok(()) => Ok(h),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(e),
        }
    }
}

impl Drop for Lock {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.info);
        let _ = self.file.unlock();
    }
}
