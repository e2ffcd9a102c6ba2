//! The rendered definitions that runs ran, kept by fingerprint (`<state>/definitions/<sha>.json`), so
//! `plan` can show what changed in a step since it ran, as a diff of fields (Terraform's
//! `~ version = "1.18.4" -> "1.18.5"`).
//!
//! Owns those files and the field diff. Definitions hold `op://` references, never secret values.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::dag::Work;

fn path(state_dir: &Path, fingerprint: &str) -> Option<PathBuf> {
    // Fingerprints are hex; anything else is not a file name we write.
    (!fingerprint.is_empty() && fingerprint.chars().all(|c| c.is_ascii_hexdigit())).then(|| {
        state_dir
            .join("definitions")
            .join(format!("{fingerprint}.json"))
    })
}

/// Keep the rendered definition of each unit about to run (once per fingerprint).
pub fn save<'a>(
    state_dir: &Path,
    work: impl IntoIterator<Item = &'a Work>,
) -> crate::error::Result<()> {
    let dir = state_dir.join("definitions");
    let mut made = false;
    for w in work {
        let Some(p) = path(state_dir, w.fingerprint()) else {
            continue;
        };
        if p.exists() {
            continue;
        }
        if !made {
            super::journal::ensure_private_dir(state_dir)?;
            std::fs::create_dir_all(&dir)?;
            made = true;
        }
        std::fs::write(&p, serde_json::to_vec(w)?)?;
    }
    Ok(())
}

/// The definition recorded under a fingerprint, if kept.
pub fn load(state_dir: &Path, fingerprint: &str) -> Option<Value> {
    let text = std::fs::read(path(state_dir, fingerprint)?).ok()?;
    serde_json::from_slice(&text).ok()
}

/// One changed field: `run.cmd.3: "1.18.4" -> "1.18.5"`.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Change {
    pub field: String,
    pub old: Option<Value>,
    pub new: Option<Value>,
}

fn flatten(prefix: &str, v: &Value, out: &mut BTreeMap<String, Value>) {
    match v {
        Value::Object(m) => {
            for (k, v) in m {
                let p = if prefix.is_empty() {
                    k.clone()
                } else {
                    format!("{prefix}.{k}")
                };
                flatten(&p, v, out);
            }
        }
        Value::Array(a) if !a.is_empty() => {
            for (i, v) in a.iter().enumerate() {
                flatten(&format!("{prefix}.{i}"), v, out);
            }
        }
        other => {
            out.insert(prefix.to_string(), other.clone());
        }
    }
}

/// The fields that differ between two definitions (bookkeeping fields left out).
pub fn diff(old: &Value, new: &Value) -> Vec<Change> {
    let (mut a, mut b) = (BTreeMap::new(), BTreeMap::new());
    flatten("", old, &mut a);
    flatten("", new, &mut b);
    let skip = |k: &str| matches!(k, "fingerprint" | "line" | "file");
    let mut keys: Vec<&String> = a.keys().chain(b.keys()).filter(|k| !skip(k)).collect();
    keys.sort();
    keys.dedup();
    keys.into_iter()
        .filter(|k| a.get(*k) != b.get(*k))
        .map(|k| Change {
            field: k.clone(),
            old: a.get(k).cloned(),
            new: b.get(k).cloned(),
        })
        .collect()
}

/// `~ run.cmd.3: "1.18.4" -> "1.18.5"` (`+` added, `-` removed).
pub fn render(c: &Change) -> String {
    match (&c.old, &c.new) {
        (Some(o), Some(n)) => format!("~ {}: {o} -> {n}", c.field),
        (None, Some(n)) => format!("+ {}: {n}", c.field),
        (Some(o), None) => format!("- {}: {o}", c.field),
        (None, None) => format!("~ {}", c.field),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_each_changed_field_with_old_and_new() {
        let old = serde_json::json!({"run": {"cmd": ["helm", "--version", "1.18.4"]}, "timeout": "5m", "fingerprint": "a"});
        let new = serde_json::json!({"run": {"cmd": ["helm", "--version", "1.18.5"]}, "timeout": "5m", "fingerprint": "b", "confirm": true});
        let d: Vec<String> = diff(&old, &new).iter().map(render).collect();
        assert_eq!(
            d,
            vec!["+ confirm: true", "~ run.cmd.2: \"1.18.4\" -> \"1.18.5\""]
        );
    }
}
