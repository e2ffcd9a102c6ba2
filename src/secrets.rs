//! Secret references (`op://vault/item/field`): validation, resolution at run time, and redaction.
//!
//! Owns the rule that secrets are references. It never writes a resolved value anywhere: values live
//! only in memory, in the environment of the step that needs them, and every line that leaves a
//! process passes through the [`Redactor`].

use std::sync::{Arc, RwLock};

/// Is this string a 1Password secret reference?
pub fn is_reference(s: &str) -> bool {
    let Some(rest) = s.strip_prefix("op://") else {
        return false;
    };
    let parts: Vec<&str> = rest.split('/').collect();
    parts.len() >= 3 && parts.iter().all(|p| !p.is_empty())
}

/// Replaces every known secret value with `***`.
#[derive(Clone, Default)]
pub struct Redactor {
    values: Arc<RwLock<Vec<String>>>,
}

impl Redactor {
    pub fn new() -> Self {
        Self::default()
    }
    /// Remember a secret value (values shorter than 4 characters are too common to redact safely
    /// and are still kept out of state because state never holds values).
    pub fn add(&self, value: &str) {
        let v = value.trim();
        if v.len() >= 4 {
            let mut vals = self.values.write().expect("redactor lock");
            if !vals.iter().any(|x| x == v) {
                vals.push(v.to_string());
                vals.sort_by_key(|s| std::cmp::Reverse(s.len()));
            }
        }
    }
    pub fn redact(&self, text: &str) -> String {
        let vals = self.values.read().expect("redactor lock");
        let mut out = text.to_string();
        for v in vals.iter() {
            if out.contains(v.as_str()) {
                out = out.replace(v.as_str(), "***");
            }
        }
        out
    }
}
