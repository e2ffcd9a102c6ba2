//! `flux` stand-in (facts: real-tools.md §4): `check --pre`, `bootstrap github`, `get`, `reconcile`,
//! `version`. Progress goes to stderr with flux's prefixes; tables to stdout.

use std::io::{BufRead, Write};

use serde_json::{Value, json};

use super::common;
use crate::cluster::{Objects, Remote};

const VALUED: &[&str] = &[
    "--context",
    "--kubeconfig",
    "-n",
    "--namespace",
    "--owner",
    "--repository",
    "--branch",
    "--path",
    "--timeout",
    "--hostname",
    "--interval",
    "--components-extra",
    "--team",
    "--status-selector",
    "-l",
    "--label-selector",
];

fn action(m: &str) {
    eprintln!("► {m}");
}
fn ok(m: &str) {
    eprintln!("✔ {m}");
}
fn fail(m: &str) -> i32 {
    eprintln!("✗ {m}");
    1
}

pub fn main(args: &[String]) -> i32 {
    if let Some(code) = common::fault("flux", args) {
        return code;
    }
    let pos = common::positionals(args, VALUED);
    let sub: Vec<&str> = pos.iter().map(String::as_str).collect();
    if sub.first() == Some(&"version") && common::has(args, &["--client"]) {
        println!("flux: v2.7.3");
        return 0;
    }
    if let Err(e) = common::lab() {
        return fail(&e);
    }
    let kubeconfig = common::flag(args, &["--kubeconfig"]);
    let ctx = common::flag(args, &["--context"]);
    let ns = common::flag(args, &["-n", "--namespace"]).unwrap_or_else(|| "flux-system".into());
    let all = common::has(args, &["-A", "--all-namespaces"]);
    // The token prompt happens before anything touches the cluster (bootstrap_github.go).
    let token = if sub.first() == Some(&"bootstrap") {
        Some(token())
    } else {
        None
    };
    common::runtime().block_on(async move {
        let c = match common::remote(kubeconfig.as_deref(), ctx.as_deref()).await {
            Ok(c) => c,
            Err(e) => return fail(&format!("Kubernetes client initialization failed: {e}")),
        };
        match sub.as_slice() {
            ["check", ..] if common::has(args, &["--pre"]) => check_pre(&c).await,
            ["bootstrap", "github"] => match token {
                Some(Ok(_)) => bootstrap(&c, args).await,
                Some(Err(e)) => fail(&e),
                None => 1,
            },
            ["get", what] => get(&c, what, None, if all { None } else { Some(&ns) }).await,
            ["get", "sources", "git"] | ["get", "source", "git"] => {
                get(&c, "sources-git", None, if all { None } else { Some(&ns) }).await
            }
            ["get", what, name] => get(&c, what, Some(name), Some(&ns)).await,
            ["reconcile", kind, name] => {
                reconcile(&c, kind, name, &ns, common::has(args, &["--with-source"])).await
            }
            ["reconcile", "source", "git", name] => {
                reconcile(&c, "source-git", name, &ns, false).await
            }
            _ => fail(&format!(
                "unknown command {:?} for \"flux\"",
                sub.first().copied().unwrap_or("")
            )),
        }
    })
}

fn token() -> Result<String, String> {
    if let Ok(t) = std::env::var("GITHUB_TOKEN")
        && !t.is_empty()
    {
        return Ok(t);
    }
    // Without GITHUB_TOKEN the real CLI asks on stdin (bootstrap_github.go); a closed stdin ends it.
    print!("Please enter your GitHub personal access token (PAT): ");
    let _ = std::io::stdout().flush();
    let mut line = String::new();
    match std::io::stdin().lock().read_line(&mut line) {
        Ok(n) if n > 0 && !line.trim().is_empty() => Ok(line.trim().to_string()),
        _ => Err("could not read token from stdin: EOF".into()),
    }
}

async fn check_pre(c: &Remote) -> i32 {
    action("checking prerequisites");
    let v = c.0.apiserver_version().await;
    match v {
        Ok(info) => {
            let ver = info.git_version.trim_start_matches('v').to_string();
            let minor: u32 = info.minor.trim_end_matches('+').parse().unwrap_or(0);
            if info.major == "1" && minor >= 33 {
                ok(&format!("Kubernetes {ver} >=1.33.0-0"));
                ok("prerequisites checks passed");
                0
            } else {
                fail(&format!(
                    "Kubernetes version {} does not match >=1.33.0-0",
                    info.git_version
                ))
            }
        }
        Err(e) => fail(&format!("Kubernetes API call failed: {e}")),
    }
}

fn crd(group: &str, plural: &str, kind: &str, version: &str) -> Value {
    json!({"apiVersion": "apiextensions.k8s.io/v1", "kind": "CustomResourceDefinition",
        "metadata": {"name": format!("{plural}.{group}"), "labels": {"app.kubernetes.io/part-of": "flux"}},
        "spec": {"group": group, "scope": "Namespaced", "names": {"plural": plural, "kind": kind, "singular": kind.to_lowercase(), "listKind": format!("{kind}List"), "shortNames": short_names(plural)},
                 "versions": [{"name": version, "served": true, "storage": true, "subresources": {"status": {}}, "schema": {"openAPIV3Schema": {"type": "object", "x-kubernetes-preserve-unknown-fields": true}}}]}})
}

/// The short names Flux's CRDs declare (`kubectl get ks`, `hr`, …).
fn short_names(plural: &str) -> Vec<&'static str> {
    match plural {
        "kustomizations" => vec!["ks"],
        "helmreleases" => vec!["hr"],
        "gitrepositories" => vec!["gitrepo"],
        "helmrepositories" => vec!["helmrepo"],
        "ocirepositories" => vec!["ocirepo"],
        "helmcharts" => vec!["hc"],
        _ => vec![],
    }
}

const CONTROLLERS: &[&str] = &[
    "helm-controller",
    "kustomize-controller",
    "notification-controller",
    "source-controller",
];

async fn bootstrap(c: &Remote, args: &[String]) -> i32 {
    let owner = common::flag(args, &["--owner"]).unwrap_or_default();
    let repo = common::flag(args, &["--repository"]).unwrap_or_default();
    let branch = common::flag(args, &["--branch"]).unwrap_or_else(|| "main".into());
    let path = common::flag(args, &["--path"]).unwrap_or_else(|| ".".into());
    let path = format!("./{}", path.trim_start_matches("./"));
    let timeout = common::flag(args, &["--timeout"])
        .and_then(|t| humantime::parse_duration(&t).ok())
        .unwrap_or(std::time::Duration::from_secs(300));
    let url = format!("https://github.com/{owner}/{repo}");
    let existing = c
        .get(
            "kustomize.toolkit.fluxcd.io/v1",
            "Kustomization",
            Some("flux-system"),
            "flux-system",
        )
        .await
        .ok()
        .flatten();
    if let Some(k) = &existing {
        let old = k["spec"]["path"].as_str().unwrap_or("");
        if old != path {
            return fail(&format!(
                "sync path configuration (\"{path}\") would overwrite path (\"{old}\") of existing Kustomization"
            ));
        }
    }
    let rerun = existing.is_some();
    action("connecting to github.com");
    ok(&format!(
        "repository \"{url}\" {}",
        if rerun { "reconciled" } else { "created" }
    ));
    action(&format!(
        "cloning branch \"{branch}\" from Git repository \"{url}.git\""
    ));
    ok("cloned repository");
    action("generating component manifests");
    ok("generated component manifests");
    let sha: String = (0..40)
        .map(|_| format!("{:x}", fastrand::u8(..16)))
        .collect();
    if rerun {
        ok("component manifests are up to date");
    } else {
        ok(&format!(
            "committed component manifests to \"{branch}\" (\"{sha}\")"
        ));
        action(&format!("pushing component manifests to \"{url}.git\""));
    }
    action("installing components in \"flux-system\" namespace");
    let mut objs =
        vec![json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "flux-system"}})];
    objs.push(crd(
        "source.toolkit.fluxcd.io",
        "gitrepositories",
        "GitRepository",
        "v1",
    ));
    objs.push(crd(
        "source.toolkit.fluxcd.io",
        "helmrepositories",
        "HelmRepository",
        "v1",
    ));
    objs.push(crd(
        "source.toolkit.fluxcd.io",
        "ocirepositories",
        "OCIRepository",
        "v1",
    ));
    objs.push(crd(
        "source.toolkit.fluxcd.io",
        "helmcharts",
        "HelmChart",
        "v1",
    ));
    objs.push(crd(
        "kustomize.toolkit.fluxcd.io",
        "kustomizations",
        "Kustomization",
        "v1",
    ));
    objs.push(crd(
        "helm.toolkit.fluxcd.io",
        "helmreleases",
        "HelmRelease",
        "v2",
    ));
    for name in CONTROLLERS {
        objs.push(json!({"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": name, "namespace": "flux-system", "labels": {"app.kubernetes.io/part-of": "flux"}},
            "spec": {"replicas": 1, "selector": {"matchLabels": {"app": name}}, "template": {"metadata": {"labels": {"app": name}}, "spec": {"containers": [{"name": "manager", "image": format!("ghcr.io/fluxcd/{name}:lab")}]}}}}));
    }
    for o in objs {
        if let Err(e) = c.apply(o).await {
            return fail(&format!("install failed: {e}"));
        }
    }
    ok("installed components");
    ok("reconciled components");
    action("determining if source secret \"flux-system/flux-system\" exists");
    let secret = c
        .get("v1", "Secret", Some("flux-system"), "flux-system")
        .await
        .ok()
        .flatten();
    if secret.is_none() {
        action("generating source secret");
        ok(
            "public key: ecdsa-sha2-nistp384 AAAAE2VjZHNhLXNoYTItbmlzdHAzODQAAAAIbmlzdHAzODQAAABhBLAB",
        );
        ok(&format!(
            "configured deploy key \"flux-system-{branch}-flux-system-{path}\" for \"{url}\""
        ));
        action("applying source secret \"flux-system/flux-system\"");
        let s = json!({"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "flux-system", "namespace": "flux-system"}, "type": "Opaque", "data": {"identity": "TEFC", "known_hosts": "TEFC"}});
        if let Err(e) = c.apply(s).await {
            return fail(&e.to_string());
        }
        ok("reconciled source secret");
    } else {
        ok("source secret up to date");
    }
    action("generating sync manifests");
    ok("generated sync manifests");
    if rerun {
        ok("sync manifests are up to date");
    } else {
        ok(&format!(
            "committed sync manifests to \"{branch}\" (\"{sha}\")"
        ));
        action(&format!("pushing sync manifests to \"{url}.git\""));
    }
    action("applying sync manifests");
    let git = json!({"apiVersion": "source.toolkit.fluxcd.io/v1", "kind": "GitRepository", "metadata": {"name": "flux-system", "namespace": "flux-system"},
        "spec": {"interval": "1m0s", "ref": {"branch": branch}, "secretRef": {"name": "flux-system"}, "url": format!("ssh://git@github.com/{owner}/{repo}")}});
    let ks = json!({"apiVersion": "kustomize.toolkit.fluxcd.io/v1", "kind": "Kustomization", "metadata": {"name": "flux-system", "namespace": "flux-system"},
        "spec": {"interval": "10m0s", "path": path, "prune": true, "sourceRef": {"kind": "GitRepository", "name": "flux-system"}}});
    for o in [git, ks] {
        if let Err(e) = c.apply(o).await {
            return fail(&e.to_string());
        }
    }
    ok("reconciled sync configuration");
    let deadline = std::time::Instant::now() + timeout;
    for (kind, api, label) in [
        (
            "GitRepository",
            "source.toolkit.fluxcd.io/v1",
            "GitRepository",
        ),
        (
            "Kustomization",
            "kustomize.toolkit.fluxcd.io/v1",
            "Kustomization",
        ),
    ] {
        eprintln!("◎ waiting for {label} \"flux-system/flux-system\" to be reconciled");
        loop {
            let o = c
                .get(api, kind, Some("flux-system"), "flux-system")
                .await
                .ok()
                .flatten();
            if o.as_ref().is_some_and(ready) {
                ok(&format!("{label} reconciled successfully"));
                break;
            }
            if std::time::Instant::now() >= deadline {
                let msg = o
                    .as_ref()
                    .and_then(|o| {
                        o["status"]["conditions"][0]["message"]
                            .as_str()
                            .map(String::from)
                    })
                    .unwrap_or_else(|| "waiting to be reconciled".into());
                eprintln!(
                    "✗ {} 'flux-system/flux-system' not ready: '{msg}'",
                    kind.to_lowercase()
                );
                return fail(&format!(
                    "error while waiting for {kind} to be ready: 'timeout waiting for: [{kind}/flux-system/flux-system status: 'InProgress']'"
                ));
            }
            tokio::time::sleep(std::time::Duration::from_millis(100)).await;
        }
    }
    action("confirming components are healthy");
    for name in CONTROLLERS {
        ok(&format!("{name}: deployment ready"));
    }
    ok("all components are healthy");
    0
}

fn ready(o: &Value) -> bool {
    let generation = o["metadata"]["generation"].as_i64().unwrap_or(1);
    o["status"]["observedGeneration"].as_i64() == Some(generation)
        && o["status"]["conditions"].as_array().is_some_and(|cs| {
            cs.iter()
                .any(|c| c["type"] == "Ready" && c["status"] == "True")
        })
}

fn kind_of(what: &str) -> Option<(&'static str, &'static str, &'static str)> {
    match what {
        "kustomizations" | "kustomization" | "ks" => Some((
            "kustomize.toolkit.fluxcd.io/v1",
            "Kustomization",
            "Kustomization",
        )),
        "helmreleases" | "helmrelease" | "hr" => {
            Some(("helm.toolkit.fluxcd.io/v2", "HelmRelease", "HelmRelease"))
        }
        "sources-git" | "source-git" => Some((
            "source.toolkit.fluxcd.io/v1",
            "GitRepository",
            "GitRepository",
        )),
        _ => None,
    }
}

async fn get(c: &Remote, what: &str, name: Option<&str>, ns: Option<&str>) -> i32 {
    let Some((api, kind, label)) = kind_of(what) else {
        return fail(&format!("unknown command \"{what}\" for \"flux get\""));
    };
    let mut items = c.list(api, kind, ns, None).await.unwrap_or_default();
    if let Some(n) = name {
        items.retain(|o| o["metadata"]["name"] == n);
        if items.is_empty() {
            return fail(&format!(
                "{label} object '{n}' not found in \"{}\" namespace",
                ns.unwrap_or("flux-system")
            ));
        }
    }
    if items.is_empty() {
        return fail(&match ns {
            Some(ns) => format!("no {label} objects found in \"{ns}\" namespace"),
            None => format!("no {label} objects found in any namespace"),
        });
    }
    let all = ns.is_none();
    let mut rows: Vec<Vec<String>> = Vec::new();
    let mut header = vec!["NAME", "REVISION", "SUSPENDED", "READY", "MESSAGE"];
    if all {
        header.insert(0, "NAMESPACE");
    }
    rows.push(header.iter().map(|s| s.to_string()).collect());
    for o in &items {
        let cond = o["status"]["conditions"]
            .as_array()
            .and_then(|cs| cs.iter().find(|c| c["type"] == "Ready"))
            .cloned();
        let (ready, msg) = match cond {
            Some(c) => (
                c["status"].as_str().unwrap_or("Unknown").to_string(),
                c["message"].as_str().unwrap_or("").to_string(),
            ),
            None => ("False".into(), "waiting to be reconciled".into()),
        };
        let rev = o["status"]["lastAppliedRevision"]
            .as_str()
            .or_else(|| o["status"]["artifact"]["revision"].as_str())
            .or_else(|| o["status"]["lastAttemptedRevision"].as_str())
            .unwrap_or("");
        let short = rev
            .split_once("@sha1:")
            .map(|(b, s)| format!("{b}@sha1:{}", &s[..s.len().min(8)]))
            .unwrap_or_else(|| rev.to_string());
        let mut row = vec![
            o["metadata"]["name"].as_str().unwrap_or("").to_string(),
            short,
            if o["spec"]["suspend"].as_bool() == Some(true) {
                "True".into()
            } else {
                "False".into()
            },
            ready,
            msg,
        ];
        if all {
            row.insert(
                0,
                o["metadata"]["namespace"]
                    .as_str()
                    .unwrap_or("")
                    .to_string(),
            );
        }
        rows.push(row);
    }
    // tablewriter: cells padded, separated by a tab, a trailing tab on each row (facts §4.3).
    let widths: Vec<usize> = (0..rows[0].len())
        .map(|i| rows.iter().map(|r| r[i].chars().count()).max().unwrap_or(0))
        .collect();
    for r in rows {
        let line: Vec<String> = r
            .iter()
            .enumerate()
            .map(|(i, cell)| format!("{cell:<w$}", w = widths[i]))
            .collect();
        println!("{}\t", line.join("\t"));
    }
    // Exit 0 whatever the readiness: callers must read the READY column (or use a typed check).
    0
}

async fn reconcile(c: &Remote, kind: &str, name: &str, ns: &str, with_source: bool) -> i32 {
    let Some((api, k, label)) = kind_of(match kind {
        "kustomization" | "ks" => "ks",
        "helmrelease" | "hr" => "hr",
        other => other,
    }) else {
        return fail(&format!(
            "unknown command \"{kind}\" for \"flux reconcile\""
        ));
    };
    if with_source {
        action("annotating GitRepository flux-system in flux-system namespace");
        ok("GitRepository annotated");
        eprintln!("◎ waiting for GitRepository reconciliation");
        ok("fetched revision main@sha1:lab");
    }
    if c.get(api, k, Some(ns), name).await.ok().flatten().is_none() {
        return fail(&format!(
            "{label} object '{name}' not found in \"{ns}\" namespace"
        ));
    }
    action(&format!("annotating {label} {name} in {ns} namespace"));
    let requested = jiff::Timestamp::now().to_string();
    // The real CLI patches the annotation; a read-modify-write that races a controller's status
    // write is retried, as a patch would not conflict.
    let mut attempt = 0;
    loop {
        let Some(mut o) = c.get(api, k, Some(ns), name).await.ok().flatten() else {
            return fail(&format!(
                "{label} object '{name}' not found in \"{ns}\" namespace"
            ));
        };
        o["metadata"]["annotations"]["reconcile.fluxcd.io/requestedAt"] = json!(requested);
        match c.replace(o).await {
            Ok(_) => break,
            Err(e) if e.to_string().contains("modified") && attempt < 20 => {
                attempt += 1;
                tokio::time::sleep(std::time::Duration::from_millis(20)).await;
            }
            Err(e) => return fail(&e.to_string()),
        }
    }
    ok(&format!("{label} annotated"));
    eprintln!("◎ waiting for {label} reconciliation");
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(300);
    loop {
        let cur = c.get(api, k, Some(ns), name).await.ok().flatten();
        // The controller has handled this request and says it failed (facts: real-tools.md §4.4:
        // `✗ Kustomization reconciliation failed: <Ready message>`, exit 1).
        if let Some(o) = &cur
            && o["status"]["lastHandledReconcileAt"].as_str() == Some(requested.as_str())
            && !ready(o)
            && let Some(cond) = o["status"]["conditions"]
                .as_array()
                .and_then(|cs| cs.iter().find(|c| c["type"] == "Ready"))
            && cond["status"] == "False"
        {
            return fail(&format!(
                "{label} reconciliation failed: {}",
                cond["message"].as_str().unwrap_or("")
            ));
        }
        if let Some(o) = cur
            && o["status"]["lastHandledReconcileAt"].as_str() == Some(requested.as_str())
            && ready(&o)
        {
            let rev = o["status"]["lastAppliedRevision"]
                .as_str()
                .or_else(|| o["status"]["artifact"]["revision"].as_str())
                .unwrap_or("");
            ok(&format!("applied revision {rev}"));
            return 0;
        }
        if std::time::Instant::now() >= deadline {
            return fail("context deadline exceeded");
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
}
