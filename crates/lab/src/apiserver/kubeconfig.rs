//! Writing kubeconfig files that point at lab API servers (token auth, plain HTTP).

use std::path::Path;

use serde_json::{Value, json};

use crate::Result;

/// Merge contexts into a kubeconfig file (created if missing): `(context, cluster, server url)`.
/// Existing entries of the same names are replaced; others are kept.
pub fn write_kubeconfig(
    path: &Path,
    entries: &[(String, String, String)],
    current: Option<&str>,
) -> Result<()> {
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir)?;
    }
    // Two writers merging into one file at once (both clusters' kubeconfig steps run in parallel)
    // would lose one's context: hold `<file>.lock` across the read-modify-write, as client-go's
    // ModifyConfig does.
    let lock = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(path.with_extension("lock"))?;
    lock.lock()?;
    let mut cfg: Value = match std::fs::read_to_string(path) {
        Ok(t) if !t.trim().is_empty() => serde_saphyr::from_str(&t).unwrap_or_else(|_| json!({})),
        _ => json!({}),
    };
    if !cfg.is_object() {
        cfg = json!({});
    }
    cfg["apiVersion"] = json!("v1");
    cfg["kind"] = json!("Config");
    for key in ["clusters", "contexts", "users"] {
        if !cfg[key].is_array() {
            cfg[key] = json!([]);
        }
    }
    for (context, cluster, url) in entries {
        let user = context.clone();
        upsert(
            &mut cfg["clusters"],
            cluster,
            json!({"name": cluster, "cluster": {"server": url}}),
        );
        upsert(
            &mut cfg["users"],
            &user,
            json!({"name": user, "user": {"token": format!("lab-admin-{cluster}")}}),
        );
        upsert(
            &mut cfg["contexts"],
            context,
            json!({"name": context, "context": {"cluster": cluster, "user": user, "namespace": "default"}}),
        );
    }
    if let Some(c) = current {
        cfg["current-context"] = json!(c);
    } else if cfg["current-context"].as_str().is_none_or(|s| s.is_empty())
        && let Some((c, _, _)) = entries.first()
    {
        cfg["current-context"] = json!(c);
    }
    // JSON is valid YAML, and every kubeconfig reader accepts it.
    let text = serde_json::to_string_pretty(&cfg)?;
    let tmp = path.with_extension(format!("tmp.{}", std::process::id()));
    std::fs::write(&tmp, text)?;
    {
        use std::os::unix::fs::PermissionsExt;
        let _ = std::fs::set_permissions(&tmp, std::fs::Permissions::from_mode(0o600));
    }
    std::fs::rename(&tmp, path)?;
    drop(lock);
    Ok(())
}

fn upsert(list: &mut Value, name: &str, item: Value) {
    let arr = list.as_array_mut().expect("array");
    match arr.iter_mut().find(|x| x["name"].as_str() == Some(name)) {
        Some(x) => *x = item,
        None => arr.push(item),
    }
}

/// Read a kubeconfig as JSON (YAML or JSON on disk).
pub fn read_kubeconfig(path: &Path) -> Option<Value> {
    let t = std::fs::read_to_string(path).ok()?;
    serde_saphyr::from_str(&t).ok()
}
