//! Secret references (`op://vault/item/field`): validation, resolution at run time, and redaction.
//!
//! Owns the rule that secrets are references. It never writes a resolved value anywhere.

/// Is this string a 1Password secret reference?
pub fn is_reference(s: &str) -> bool {
    let Some(rest) = s.strip_prefix("op://") else {
        return false;
    };
    let parts: Vec<&str> = rest.split('/').collect();
    parts.len() >= 3 && parts.iter().all(|p| !p.is_empty())
}
