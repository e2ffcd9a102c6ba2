//! Helm values that do not exist: every `--set` key (and every key of a `-f` values file) given to
//! the Cilium chart is compared, case-sensitively, with the chart's own keys at the pinned version
//! (see `cilium_chart`); and one command may not set the same key twice to different values.

use std::collections::HashMap;

use serde_json::Value;

use super::cilium_chart;
use super::context::{Ctx, commands, flag_values, positionals, roles};
use super::{Finding, talos};

const RULE: &str = "helm-values";

/// Helm flags that take a value (helm v3.21 `helm upgrade --help`, plus the global flags).
pub fn helm_valued(f: &str) -> bool {
    matches!(
        f,
        "--set"
            | "--set-string"
            | "--set-file"
            | "--set-json"
            | "--set-literal"
            | "-f"
            | "--values"
            | "--version"
            | "--repo"
            | "-n"
            | "--namespace"
            | "--kube-context"
            | "--kubeconfig"
            | "--timeout"
            | "-o"
            | "--output"
            | "--username"
            | "--password"
            | "--ca-file"
            | "--cert-file"
            | "--key-file"
            | "--post-renderer"
            | "--post-renderer-args"
            | "--description"
            | "--history-max"
            | "--kube-apiserver"
            | "--kube-token"
            | "--kube-as-user"
            | "--kube-as-group"
            | "--kube-ca-file"
            | "--registry-config"
            | "--repository-cache"
            | "--repository-config"
            | "--burst-limit"
            | "--qps"
            | "--revision"
            | "--max"
            | "--kube-version"
            | "--api-versions"
            | "-a"
            | "--show-only"
            | "-s"
            | "--output-dir"
            | "--release-name"
            | "--name-template"
            | "--labels"
            | "-l"
            | "--wait-for-jobs-timeout"
            | "--kube-tls-server-name"
            | "--content-cache"
            | "--hide-secret-values"
    )
}

/// Is this a helm command that renders the Cilium chart (install, upgrade, template)?
pub fn is_cilium_chart(argv: &[String]) -> bool {
    if argv.first().map(|s| s.rsplit('/').next().unwrap_or(s)) != Some("helm") {
        return false;
    }
    let pos = positionals(argv, &helm_valued);
    let chart = match pos.first() {
        Some(&"upgrade") | Some(&"install") | Some(&"template") => pos.get(2).or(pos.get(1)),
        _ => return false,
    };
    let Some(chart) = chart else { return false };
    let repo = flag_values(argv, &["--repo"]);
    *chart == "cilium/cilium"
        || chart.ends_with("/charts/cilium")
        || chart.ends_with("/cilium/cilium")
        || (*chart == "cilium" && repo.iter().any(|r| r.contains("helm.cilium.io")))
}

/// Split a `--set` argument into `key=value` pairs: commas separate pairs, except inside `{…}`
/// lists and after a backslash (Helm's strvals rules).
fn split_set(s: &str) -> Vec<(String, String)> {
    let mut parts = Vec::new();
    let mut cur = String::new();
    let mut depth = 0;
    let mut esc = false;
    for c in s.chars() {
        if esc {
            cur.push(c);
            esc = false;
            continue;
        }
        match c {
            '\\' => {
                esc = true;
                cur.push(c);
            }
            '{' => {
                depth += 1;
                cur.push(c);
            }
            '}' => {
                depth -= 1;
                cur.push(c);
            }
            ',' if depth <= 0 => parts.push(std::mem::take(&mut cur)),
            _ => cur.push(c),
        }
    }
    parts.push(cur);
    parts
        .into_iter()
        .filter(|p| !p.is_empty())
        .map(|p| match p.split_once('=') {
            Some((k, v)) => (k.to_string(), v.to_string()),
            None => (p, String::new()),
        })
        .collect()
}

/// Every `--set`-style key and value of a command, in order.
pub fn set_values(argv: &[String], names: &[&str]) -> Vec<(String, String)> {
    flag_values(argv, names)
        .into_iter()
        .flat_map(split_set)
        .collect()
}

pub fn values_files(argv: &[String]) -> Vec<&str> {
    flag_values(argv, &["-f", "--values", "--helm-values"])
}

/// The key path without list indices: `a.b[0].c` → `a.b`, plus whether an index was cut.
fn normalize(key: &str) -> String {
    let key = key.replace("\\.", "\u{0}");
    let mut out = Vec::new();
    for part in key.split('.') {
        if let Some(i) = part.find('[') {
            out.push(part[..i].replace('\u{0}', "."));
            break;
        }
        out.push(part.replace('\u{0}', "."));
    }
    out.join(".")
}

/// Why the chart has no such key (None: it has it).
pub fn unknown_key(key: &str) -> Option<String> {
    let key = normalize(key);
    if cilium_chart::KEYS.contains(&key.as_str()) || cilium_chart::OPEN.contains(&key.as_str()) {
        return None;
    }
    if cilium_chart::OPEN
        .iter()
        .any(|o| key.starts_with(&format!("{o}.")))
    {
        return None;
    }
    if cilium_chart::KEYS
        .iter()
        .any(|k| k.starts_with(&format!("{key}.")))
    {
        return None;
    }
    let lower = key.to_ascii_lowercase();
    if let Some(k) = cilium_chart::KEYS
        .iter()
        .chain(cilium_chart::OPEN)
        .find(|k| k.to_ascii_lowercase() == lower)
    {
        return Some(format!("the chart's key is {k} (keys are case-sensitive)"));
    }
    // The nearest key with the same parent.
    let parent = key.rsplit_once('.').map(|(p, _)| p).unwrap_or("");
    let best = cilium_chart::KEYS
        .iter()
        .filter(|k| k.rsplit_once('.').map(|(p, _)| p).unwrap_or("") == parent)
        .map(|k| (distance(k, &key), *k))
        .min();
    match best {
        Some((d, k)) if d <= 3 => Some(format!("did you mean {k}?")),
        _ => Some(format!(
            "see the chart's values: helm show values cilium/cilium --version {}",
            cilium_chart::VERSION
        )),
    }
}

fn distance(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut prev: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.chars().enumerate() {
        let mut cur = vec![i + 1];
        for (j, cb) in b.iter().enumerate() {
            let sub = prev[j] + usize::from(ca != *cb);
            cur.push(sub.min(prev[j + 1] + 1).min(cur[j] + 1));
        }
        prev = cur;
    }
    prev[b.len()]
}

fn flatten(v: &Value, prefix: &str, out: &mut Vec<String>) {
    if let Value::Object(m) = v {
        for (k, x) in m {
            let p = if prefix.is_empty() {
                k.clone()
            } else {
                format!("{prefix}.{k}")
            };
            out.push(p.clone());
            if x.is_object() {
                flatten(x, &p, out);
            }
        }
    }
}

/// Whether the pinned chart's minor version is the one the key table was read from.
fn table_applies(version: Option<&str>) -> bool {
    let want: Vec<&str> = cilium_chart::VERSION.split('.').take(2).collect();
    version.is_none_or(|v| {
        let v: Vec<&str> = v.trim_start_matches('v').split('.').take(2).collect();
        v == want
    })
}

pub(super) fn findings(cx: &Ctx) -> Vec<Finding> {
    let mut out = Vec::new();
    for (i, u) in cx.units() {
        for (role, a) in roles(&cx.dag.work[i]) {
            for c in commands(a) {
                let cli = c.tool() == "cilium"
                    && matches!(
                        c.argv.get(1).map(String::as_str),
                        Some("install" | "upgrade")
                    );
                if !cli && !is_cilium_chart(&c.argv) {
                    continue;
                }
                let version = flag_values(&c.argv, &["--version"])
                    .first()
                    .map(|s| s.to_string())
                    .or_else(|| cx.spec.plan.versions.charts.get("cilium").cloned());
                if !table_applies(version.as_deref()) {
                    continue;
                }
                let names: &[&str] = if cli {
                    &["--set", "--helm-set", "--set-string"]
                } else {
                    &[
                        "--set",
                        "--set-string",
                        "--set-json",
                        "--set-file",
                        "--set-literal",
                    ]
                };
                let mut seen: HashMap<String, String> = HashMap::new();
                for (key, value) in set_values(&c.argv, names) {
                    if let Some(why) = unknown_key(&key) {
                        out.push(Finding::error(
                            RULE,
                            cx.on_step(
                                u,
                                role.field(),
                                &[&format!("{key}="), &key],
                                format!(
                                    "the Cilium chart {} has no value {key:?}: Helm ignores it silently",
                                    version.as_deref().unwrap_or(cilium_chart::VERSION)
                                ),
                            )
                            .help(why),
                        ));
                    }
                    if let Some(prev) = seen.get(&key)
                        && *prev != value
                    {
                        out.push(Finding::error(
                            RULE,
                            cx.on_step(
                                u,
                                role.field(),
                                &[&format!("{key}={value}"), &format!("{key}=")],
                                format!(
                                    "{key} is set twice in one command ({prev:?}, then {value:?}); Helm keeps the last"
                                ),
                            )
                            .help("set each value once"),
                        ));
                    }
                    seen.insert(key, value);
                }
                for file in values_files(&c.argv) {
                    let Ok(text) = std::fs::read_to_string(file) else {
                        continue;
                    };
                    let Ok(doc) = serde_saphyr::from_str::<Value>(&text) else {
                        continue;
                    };
                    let mut keys = Vec::new();
                    flatten(&doc, "", &mut keys);
                    for key in keys {
                        // Only the first unknown level: its children are unknown too.
                        if let Some(why) = unknown_key(&key)
                            && key
                                .rsplit_once('.')
                                .is_none_or(|(p, _)| unknown_key(p).is_none())
                        {
                            let path: Vec<&str> = key.split('.').collect();
                            let loc = talos::Loc {
                                file: file.into(),
                                line: 0,
                                col: 0,
                                field: key.clone(),
                            };
                            let (line, col) = key_line_of(&text, &path);
                            let loc = talos::Loc { line, col, ..loc };
                            out.push(Finding::error(
                                RULE,
                                loc.error(format!(
                                    "the Cilium chart {} has no value {key:?}: Helm ignores it silently",
                                    version.as_deref().unwrap_or(cilium_chart::VERSION)
                                ))
                                .help(why),
                            ));
                        }
                    }
                }
            }
        }
    }
    out
}

fn key_line_of(text: &str, path: &[&str]) -> (u64, u64) {
    let mut from = 0usize;
    let mut found = (1, 1);
    for key in path {
        for (n, l) in text.lines().enumerate().skip(from) {
            let t = l.trim_start().trim_start_matches("- ");
            if t.starts_with(&format!("{key}:")) {
                found = (n as u64 + 1, l.find(key).unwrap_or(0) as u64 + 1);
                from = n + 1;
                break;
            }
        }
    }
    found
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn chart_keys_are_case_sensitive() {
        assert!(unknown_key("cgroup.autoMount.enabled").is_none());
        let why = unknown_key("cgroup.automount.enabled").unwrap_or_default();
        assert!(why.contains("cgroup.autoMount.enabled"), "{why}");
        assert!(unknown_key("nodeSelector.kubernetes\\.io/os").is_none());
        assert!(unknown_key("clustermesh.config.clusters[0].name").is_none());
        assert!(unknown_key("hubble.relay.enabeld").is_some());
    }

    #[test]
    fn set_splits_on_commas_outside_lists() {
        let v = split_set("a=1,b={x,y},c=2");
        assert_eq!(v.len(), 3);
        assert_eq!(v[1], ("b".into(), "{x,y}".into()));
    }
}
