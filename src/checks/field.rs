//! The `field` check: one field of any object (typed or custom) equals a value, with the object's
//! `observedGeneration` current where it has one. The readiness fields of platform components are
//! mostly such fields, not conditions (facts: platform-components.md §0: CephCluster
//! `status.ceph.health`, BackupStorageLocation `status.phase`, …).

use kube::api::{Api, DynamicObject};
use kube::core::{ApiResource, GroupVersionKind};
use serde_json::Value;

use super::Outcome;
use crate::error::Result;
use crate::spec::phase::FieldCheck;

/// Read a dot path from JSON: `status.ceph.health`, `items.0.name`, and list items by a field,
/// `spec.ports[name=otlp-grpc].port` or `status.conditions[type=Ready].status`.
pub fn lookup<'v>(v: &'v Value, path: &str) -> Option<&'v Value> {
    let mut cur = v;
    for part in path.split('.').filter(|p| !p.is_empty()) {
        let (key, select) = match part.split_once('[') {
            Some((k, rest)) => (k, rest.strip_suffix(']').and_then(|s| s.split_once('='))),
            None => (part, None),
        };
        if !key.is_empty() {
            cur = match cur {
                Value::Object(m) => m.get(key)?,
                Value::Array(a) => a.get(key.parse::<usize>().ok()?)?,
                _ => return None,
            };
        }
        if let Some((k, want)) = select {
            cur = cur
                .as_array()?
                .iter()
                .find(|item| item.get(k).map(text).as_deref() == Some(want))?;
        }
    }
    Some(cur)
}

/// [`lookup`] as text, where a last part `#` counts the items of a list
/// (`spec.template.spec.containers.#`, `status.managedRolesStatus.byStatus.reconciled.#`).
pub fn lookup_text(v: &Value, path: &str) -> Option<String> {
    match path.strip_suffix('#') {
        Some(list) if list.is_empty() || list.ends_with('.') => {
            let l = lookup(v, list.trim_end_matches('.'))?;
            l.as_array().map(|a| a.len().to_string())
        }
        _ => lookup(v, path).filter(|v| !v.is_null()).map(text),
    }
}

/// What the object says next to the field: a `message` or Ceph-style `details` beside it.
fn beside(obj: &Value, path: &str) -> Option<String> {
    let parent = path.rsplit_once('.').map(|(p, _)| p)?;
    let p = lookup(obj, parent)?;
    if let Some(d) = p["details"].as_object().filter(|d| !d.is_empty()) {
        let parts: Vec<String> = d
            .iter()
            .map(|(k, v)| format!("{k}: {}", v["message"].as_str().unwrap_or("")))
            .collect();
        return Some(format!("{parent}.details: {}", parts.join("; ")));
    }
    p["message"]
        .as_str()
        .filter(|m| !m.is_empty() && parent != "status")
        .map(|m| format!("{parent}.message: {m}"))
}

fn text(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

/// Who an object is, for messages: `CephCluster rook-ceph/rook-ceph`.
pub fn who(kind: &str, obj: &Value) -> String {
    let ns = obj["metadata"]["namespace"]
        .as_str()
        .map(|n| format!("{n}/"))
        .unwrap_or_default();
    format!(
        "{kind} {ns}{}",
        obj["metadata"]["name"].as_str().unwrap_or("")
    )
}

/// The rule: the object's generation is observed, and the field has a wanted value.
pub fn field_rule(
    obj: &Value,
    kind: &str,
    path: &str,
    equals: Option<&str>,
    one_of: &[String],
) -> Outcome {
    let who = who(kind, obj);
    let generation = obj["metadata"]["generation"].as_i64();
    if let (Some(g), Some(o)) = (generation, obj["status"]["observedGeneration"].as_i64())
        && o < g
    {
        return Outcome {
            passed: false,
            terminal: false,
            detail: format!("{who}: observedGeneration {o} is behind generation {g}"),
        };
    }
    let want = match equals {
        Some(e) => format!("{e:?}"),
        None => format!("one of {one_of:?}"),
    };
    let got = lookup_text(obj, path);
    let passed = got
        .as_deref()
        .is_some_and(|g| equals == Some(g) || one_of.iter().any(|o| o == g));
    let mut detail = match &got {
        None => format!("{who}: .{path} is not set yet (want {want})"),
        Some(g) => format!("{who}: .{path} is {g:?} (want {want})"),
    };
    // What the object says about itself helps when the value is wrong: Rook and Velero write a
    // status message next to the field.
    if !passed {
        if let Some(b) = beside(obj, path) {
            detail.push_str(&format!("; {b}"));
        }
        if let Some(m) = obj["status"]["message"].as_str().filter(|m| !m.is_empty()) {
            detail.push_str(&format!("; status.message: {m}"));
        }
    }
    Outcome {
        passed,
        terminal: false,
        detail,
    }
}

/// Fetch the object and apply [`field_rule`].
pub async fn evaluate(client: &kube::Client, c: &FieldCheck) -> Result<Outcome> {
    if c.equals.is_none() && c.one_of.is_empty() {
        return Err(color_eyre::eyre::eyre!(
            "a field check needs `equals` or `one_of`"
        ));
    }
    let (g, v) = c
        .api_version
        .split_once('/')
        .unwrap_or(("", &c.api_version));
    let ar = ApiResource::from_gvk(&GroupVersionKind::gvk(g, v, &c.kind));
    let api: Api<DynamicObject> = match &c.namespace {
        Some(ns) => Api::namespaced_with(client.clone(), ns, &ar),
        None => Api::all_with(client.clone(), &ar),
    };
    let name = format!(
        "{} {}{}",
        c.kind,
        c.namespace
            .as_ref()
            .map(|n| format!("{n}/"))
            .unwrap_or_default(),
        c.name
    );
    Ok(match api.get_opt(&c.name).await {
        Ok(Some(o)) => field_rule(
            &serde_json::to_value(o)?,
            &c.kind,
            &c.field,
            c.equals.as_deref(),
            &c.one_of,
        ),
        Ok(None) => Outcome {
            passed: false,
            terminal: false,
            detail: format!("{name} not found"),
        },
        Err(kube::Error::Api(s)) if s.code == 404 => Outcome {
            passed: false,
            terminal: false,
            detail: format!(
                "{} ({}) is not served yet: its CRD is not installed",
                c.kind, c.api_version
            ),
        },
        Err(e) => return Err(e.into()),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn stale_generation_is_not_ready_even_with_the_value() {
        let o = json!({"metadata": {"name": "rook-ceph", "namespace": "rook-ceph", "generation": 3},
                       "status": {"observedGeneration": 2, "ceph": {"health": "HEALTH_OK"}}});
        let out = field_rule(
            &o,
            "CephCluster",
            "status.ceph.health",
            Some("HEALTH_OK"),
            &[],
        );
        assert!(!out.passed);
        assert!(
            out.detail
                .contains("observedGeneration 2 is behind generation 3"),
            "{}",
            out.detail
        );
    }

    #[test]
    fn shows_the_value_seen_and_the_status_message() {
        let o = json!({"metadata": {"name": "default", "namespace": "velero", "generation": 1},
                       "status": {"phase": "Unavailable", "message": "BackupStorageLocation \"default\" is unavailable: bucket not found"}});
        let out = field_rule(
            &o,
            "BackupStorageLocation",
            "status.phase",
            None,
            &["Available".into()],
        );
        assert!(!out.passed);
        assert!(
            out.detail.contains(".status.phase is \"Unavailable\""),
            "{}",
            out.detail
        );
        assert!(out.detail.contains("bucket not found"), "{}", out.detail);
        let ok =
            json!({"metadata": {"name": "x", "generation": 1}, "status": {"phase": "Available"}});
        assert!(
            field_rule(
                &ok,
                "BackupStorageLocation",
                "status.phase",
                Some("Available"),
                &[]
            )
            .passed
        );
        let svc = json!({"spec": {"ports": [{"name": "otlp-grpc", "port": 4317}, {"name": "otlp-http", "port": 4318}]}});
        assert_eq!(
            lookup(&svc, "spec.ports[name=otlp-http].port"),
            Some(&json!(4318))
        );
        assert_eq!(lookup(&svc, "spec.ports[name=zipkin].port"), None);
        assert_eq!(lookup_text(&svc, "spec.ports.#").as_deref(), Some("2"));
        assert_eq!(lookup_text(&svc, "spec.missing.#"), None);
        let warn = json!({"metadata": {"name": "rook-ceph"}, "status": {"ceph": {"health": "HEALTH_WARN", "details": {"TOO_FEW_OSDS": {"message": "OSD count 2 < osd_pool_default_size 3"}}}}});
        let out = field_rule(
            &warn,
            "CephCluster",
            "status.ceph.health",
            Some("HEALTH_OK"),
            &[],
        );
        assert!(
            out.detail
                .contains("status.ceph.details: TOO_FEW_OSDS: OSD count 2"),
            "{}",
            out.detail
        );
    }
}
