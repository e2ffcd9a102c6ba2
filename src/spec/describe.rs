//! One-line human descriptions of checks and actions, for plan output and reports.

use crate::spec::phase::ActionSpec;

/// Quote one argv element for display (POSIX shell rules). Display only: nothing is ever run from it.
pub fn shell_quote(s: &str) -> String {
    if !s.is_empty()
        && s.chars()
            .all(|c| c.is_ascii_alphanumeric() || "-_./=:@,+%^".contains(c))
    {
        s.to_string()
    } else {
        format!("'{}'", s.replace('\'', "'\\''"))
    }
}

fn argv(a: &[String]) -> String {
    a.iter()
        .map(|s| shell_quote(s))
        .collect::<Vec<_>>()
        .join(" ")
}

fn on(cluster: &Option<String>) -> String {
    cluster
        .as_ref()
        .map(|c| format!(" on {c}"))
        .unwrap_or_default()
}

fn ns_name(ns: &Option<String>, name: &str) -> String {
    match ns {
        Some(n) => format!("{n}/{name}"),
        None => name.to_string(),
    }
}

/// A readable, complete description of an action.
pub fn describe_action(a: &ActionSpec) -> String {
    match a {
        ActionSpec::Cmd(v) => argv(v),
        ActionSpec::Shell(s) => format!("sh -c {}", shell_quote(s)),
        ActionSpec::Nodes(c) => {
            let which = c
                .names
                .as_ref()
                .map(|n| n.join(", "))
                .unwrap_or_else(|| "all plan nodes".into());
            let what = if c.ready {
                "Ready"
            } else {
                "registered (Ready=False is fine before a CNI)"
            };
            format!("[kube] nodes {what}: {which}{}", on(&c.cluster))
        }
        ActionSpec::Rollout(c) => format!(
            "[kube] rollout of {} {}/{} complete{}",
            c.kind,
            c.namespace,
            c.name,
            on(&c.cluster)
        ),
        ActionSpec::Condition(c) => format!(
            "[kube] {} {} ({}) has {}={}{}",
            c.kind,
            ns_name(&c.namespace, &c.name),
            c.api_version,
            c.condition,
            c.status,
            on(&c.cluster)
        ),
        ActionSpec::Exists(c) | ActionSpec::Absent(c) => {
            let verb = if matches!(a, ActionSpec::Exists(_)) {
                "exists"
            } else {
                "is absent"
            };
            let mut extra = Vec::new();
            for (k, v) in &c.labels {
                extra.push(format!("label {k}={v}"));
            }
            for (k, v) in &c.annotations {
                extra.push(format!("annotation {k}={v}"));
            }
            let extra = if extra.is_empty() {
                String::new()
            } else {
                format!(" with {}", extra.join(", "))
            };
            format!(
                "[kube] {} {} ({}) {verb}{extra}{}",
                c.kind,
                ns_name(&c.namespace, &c.name),
                c.api_version,
                on(&c.cluster)
            )
        }
        ActionSpec::Crd(c) => format!("[kube] CRD {} Established{}", c.name, on(&c.cluster)),
        ActionSpec::Json(j) => {
            let want = match (&j.equals, j.one_of.is_empty()) {
                (Some(e), _) => format!("== {e:?}"),
                (None, false) => format!("in {:?}", j.one_of),
                (None, true) => String::new(),
            };
            format!("{}  [json .{} {want}]", argv(&j.cmd), j.field)
        }
        ActionSpec::Field(c) => {
            let want = match &c.equals {
                Some(e) => format!("== {e:?}"),
                None => format!("in {:?}", c.one_of),
            };
            format!(
                "[kube] {} {} ({}) .{} {want}{}",
                c.kind,
                ns_name(&c.namespace, &c.name),
                c.api_version,
                c.field,
                on(&c.cluster)
            )
        }
        ActionSpec::Kustomizations(c) | ActionSpec::Helmreleases(c) => {
            let kind = if matches!(a, ActionSpec::Kustomizations(_)) {
                "Kustomizations"
            } else {
                "HelmReleases"
            };
            let ns = c.namespace.clone().unwrap_or_else(|| "flux-system".into());
            let mut which: Vec<String> = c
                .names
                .iter()
                .map(|n| {
                    if n.contains('/') {
                        n.clone()
                    } else {
                        format!("{ns}/{n}")
                    }
                })
                .collect();
            if let Some(sel) = &c.selector {
                which.push(format!("selector {sel}"));
            }
            let what = if c.ready {
                "Ready (root cause on failure)"
            } else {
                "exist"
            };
            format!(
                "[kube] {kind} {what}: {}{}",
                which.join(", "),
                on(&c.cluster)
            )
        }
        ActionSpec::HelmValues(h) => format!(
            "{}  [values {}== HelmRelease {}/{}{}]",
            argv(&h.cmd),
            if h.deployed_keys_only {
                "(the keys it sets) "
            } else {
                ""
            },
            h.namespace,
            h.name,
            on(&h.cluster)
        ),
        ActionSpec::Manual(text) => format!("[manual] {text}"),
        ActionSpec::Flow(f) => format!(
            "[kube] flow {}: expect {} (probe pod{})",
            f.describe(),
            f.expect,
            f.image
                .as_ref()
                .map(|i| format!(", image {i}"))
                .unwrap_or_default()
        ),
    }
}
