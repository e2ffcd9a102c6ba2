//! `lint --online`: what only the live world knows. Read-only.
//!
//! * The Git repository the plan names has each cluster's path, and defines every Kustomization the
//!   phases reconcile or wait for (`flux-system` excepted: `flux bootstrap` writes it). For a lab
//!   plan the repository is the lab's Git tree (`<state dir>/lab/gitops`, or `lab/gitops`); for a
//!   real one, a shallow `git clone` of `https://github.com/<owner>/<repository>`.
//! * Each cluster endpoint resolves, and its API server certificate covers it. Talos puts the
//!   `talosctl gen config` endpoint's host, `--additional-sans` and the control-plane addresses in
//!   the API server certificate; when the plan's kubeconfig exists, the live server's certificate
//!   is checked too (a TLS name mismatch fails the connection).

use std::net::ToSocketAddrs;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::error::UserError;
use crate::spec::phase::ActionSpec;

use super::context::{Ctx, Role, commands, flag_values, positionals, roles};
use super::{Finding, talos};

const RULE: &str = "online";

/// Every YAML document of a tree: (file, document).
fn documents(root: &Path) -> Vec<(PathBuf, Value)> {
    let mut out = Vec::new();
    let mut stack = vec![root.to_path_buf()];
    while let Some(d) = stack.pop() {
        let Ok(rd) = std::fs::read_dir(&d) else {
            continue;
        };
        for e in rd.flatten() {
            let p = e.path();
            if p.file_name().is_some_and(|n| n == ".git") {
                continue;
            }
            if p.is_dir() {
                stack.push(p);
            } else if matches!(p.extension().and_then(|x| x.to_str()), Some("yaml" | "yml"))
                && let Ok(text) = std::fs::read_to_string(&p)
            {
                for doc in text.split("\n---") {
                    if let Ok(v) = serde_saphyr::from_str::<Value>(doc) {
                        out.push((p.clone(), v));
                    }
                }
            }
        }
    }
    out
}

/// Run a command with a time limit; true when it exits 0.
fn run_with_timeout(cmd: &mut std::process::Command, limit: Duration) -> bool {
    let Ok(mut child) = cmd
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
    else {
        return false;
    };
    let start = Instant::now();
    loop {
        match child.try_wait() {
            Ok(Some(st)) => return st.success(),
            Ok(None) if start.elapsed() < limit => std::thread::sleep(Duration::from_millis(100)),
            _ => {
                let _ = child.kill();
                let _ = child.wait();
                return false;
            }
        }
    }
}

/// The Git tree to read, and a temporary directory to remove afterwards.
fn git_tree(cx: &Ctx) -> Result<(PathBuf, Option<PathBuf>), String> {
    let plan = &cx.spec.plan;
    if plan.lab {
        // The lab serves its Git tree from `<state dir>/lab/gitops` (the lab's layout; lint sits
        // below the lab and does not import it).
        let installed = cx.state_dir.join("lab").join("gitops");
        if installed.is_dir() {
            return Ok((installed, None));
        }
        let source = crate::render::reference_tree(plan);
        if source.is_dir() {
            return Ok((source, None));
        }
        return Err(format!(
            "the lab's Git tree is not there ({} is not a directory; run the lab once)",
            source.display()
        ));
    }
    let url = format!(
        "https://github.com/{}/{}",
        plan.git.owner, plan.git.repository
    );
    let dir = std::env::temp_dir().join(format!("bootstrap-lint-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let ok = run_with_timeout(
        std::process::Command::new("git")
            .args([
                "clone",
                "--quiet",
                "--depth",
                "1",
                "--branch",
                &plan.git.branch,
                &url,
            ])
            .arg(&dir)
            .env("GIT_TERMINAL_PROMPT", "0"),
        Duration::from_secs(60),
    );
    if ok {
        Ok((dir.clone(), Some(dir)))
    } else {
        let _ = std::fs::remove_dir_all(&dir);
        Err(format!("cannot clone {url} at branch {}", plan.git.branch))
    }
}

/// Kustomization names the phases use, with where.
fn kustomizations<'a>(cx: &Ctx<'a>) -> Vec<(String, UserError)> {
    let mut out = Vec::new();
    for (i, w) in cx.dag.work.iter().enumerate() {
        let items: Vec<(Role, &ActionSpec, Option<String>)> = match w {
            crate::dag::Work::Step(_) => roles(w).into_iter().map(|(r, a)| (r, a, None)).collect(),
            crate::dag::Work::Gate(g) => g
                .items
                .iter()
                .map(|it| (Role::Gate, &it.check, Some(it.id.clone())))
                .collect(),
        };
        let _ = i;
        for (role, a, gate_item) in items {
            let mut names: Vec<String> = Vec::new();
            match a {
                ActionSpec::Condition(c) if c.kind == "Kustomization" => names.push(c.name.clone()),
                ActionSpec::Exists(c) if c.kind == "Kustomization" => names.push(c.name.clone()),
                ActionSpec::Kustomizations(c) => names.extend(
                    c.names
                        .iter()
                        .map(|n| n.rsplit('/').next().unwrap_or(n).to_string()),
                ),
                _ => {
                    for c in commands(a) {
                        if c.tool() != "flux" {
                            continue;
                        }
                        let pos = positionals(&c.argv, &|f| {
                            matches!(
                                f,
                                "-n" | "--namespace" | "--context" | "--kubeconfig" | "--timeout"
                            )
                        });
                        if matches!(
                            pos.first(),
                            Some(&"reconcile" | &"suspend" | &"resume" | &"get")
                        ) && matches!(pos.get(1), Some(&"kustomization" | &"ks"))
                            && let Some(n) = pos.get(2)
                        {
                            names.push(n.to_string());
                        }
                    }
                }
            }
            for name in names {
                if name == "flux-system" {
                    continue;
                }
                let e = match (w.as_step(), &gate_item) {
                    (Some(u), _) => cx.on_step(u, role.field(), &[&name], String::new()),
                    (None, Some(item)) => {
                        let (f, l, c) = cx.gate_item_at(w.phase(), item);
                        UserError::new(String::new())
                            .in_file(f)
                            .at(l, c)
                            .field(format!(
                                "gate.{}.check",
                                item.split('/').next().unwrap_or(item)
                            ))
                            .with_source_line()
                    }
                    _ => continue,
                };
                out.push((name, e));
            }
        }
    }
    out
}

fn plan_key_line(cx: &Ctx, blocks: &[&str]) -> (u64, u64) {
    let text = &cx.spec.plan_text;
    let mut line = 1usize;
    let mut col = 1usize;
    for b in blocks {
        let needle = format!("{b}:");
        match text
            .lines()
            .enumerate()
            .skip(line - 1)
            .find(|(_, l)| l.trim_start().starts_with(&needle))
        {
            Some((n, l)) => {
                line = n + 1;
                col = l.len() - l.trim_start().len() + 1;
            }
            None => return (line as u64, col as u64),
        }
    }
    (line as u64, col as u64)
}

fn host_of(endpoint: &str) -> Option<(String, u16)> {
    let rest = endpoint
        .split_once("://")
        .map(|(_, r)| r)
        .unwrap_or(endpoint);
    let rest = rest.split('/').next()?;
    let (h, p) = rest.rsplit_once(':')?;
    Some((h.trim_matches(['[', ']']).to_string(), p.parse().ok()?))
}

fn resolves(host: &str, port: u16) -> bool {
    if host.parse::<std::net::IpAddr>().is_ok() {
        return true;
    }
    let (tx, rx) = std::sync::mpsc::channel();
    let h = host.to_string();
    std::thread::spawn(move || {
        let _ = tx.send(
            (h.as_str(), port)
                .to_socket_addrs()
                .map(|mut a| a.next().is_some())
                .unwrap_or(false),
        );
    });
    rx.recv_timeout(Duration::from_secs(5)).unwrap_or(false)
}

/// Ask the live API server through the plan's kubeconfig: Some(message) when TLS says the
/// certificate does not cover the name.
fn live_name_mismatch(kubeconfig: &Path, context: &str) -> Option<String> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .ok()?;
    rt.block_on(async {
        let kc = kube::config::Kubeconfig::read_from(kubeconfig).ok()?;
        let opts = kube::config::KubeConfigOptions {
            context: Some(context.to_string()),
            ..Default::default()
        };
        let cfg = kube::Config::from_custom_kubeconfig(kc, &opts).await.ok()?;
        let client = kube::Client::try_from(cfg).ok()?;
        let r = tokio::time::timeout(Duration::from_secs(10), client.apiserver_version()).await;
        match r {
            Ok(Err(e)) => {
                let msg = format!("{e:?}");
                (msg.contains("NotValidForName") || msg.contains("not valid for name"))
                    .then_some(msg)
            }
            _ => None,
        }
    })
}

pub(super) fn findings(cx: &Ctx) -> Vec<Finding> {
    let mut out = Vec::new();
    let plan = &cx.spec.plan;
    // Git.
    match git_tree(cx) {
        Err(why) => {
            let (line, col) = plan_key_line(cx, &["git", "repository"]);
            out.push(Finding::error(
                RULE,
                UserError::new(format!("the Git repository cannot be read: {why}"))
                    .in_file(&cx.spec.plan_file)
                    .at(line, col)
                    .field("git.repository")
                    .help("check git.owner, git.repository and git.branch, and that this machine can reach the repository")
                    .with_source_line(),
            ));
        }
        Ok((root, tmp)) => {
            for (cluster, path) in &plan.git.paths {
                if !root.join(path).is_dir() {
                    let (line, col) = plan_key_line(cx, &["git", "paths", cluster]);
                    out.push(Finding::error(
                        RULE,
                        UserError::new(format!(
                            "the Git repository has no directory {path:?} (the path flux bootstrap gives {cluster})"
                        ))
                        .in_file(&cx.spec.plan_file)
                        .at(line, col)
                        .field(format!("git.paths.{cluster}"))
                        .help("correct the path, or add the directory with the cluster's Flux manifests to the repository")
                        .with_source_line(),
                    ));
                }
            }
            let docs = documents(&root);
            let mut defined: Vec<String> = docs
                .iter()
                .filter(|(_, d)| {
                    d["kind"] == "Kustomization"
                        && d["apiVersion"]
                            .as_str()
                            .is_some_and(|a| a.starts_with("kustomize.toolkit.fluxcd.io"))
                })
                .filter_map(|(_, d)| d["metadata"]["name"].as_str().map(String::from))
                .collect();
            defined.sort();
            defined.dedup();
            let mut seen = std::collections::HashSet::new();
            for (name, e) in kustomizations(cx) {
                if defined.contains(&name) || !seen.insert((name.clone(), e.line)) {
                    continue;
                }
                let mut e = e;
                e.message = format!(
                    "the Kustomization {name:?} is not defined anywhere in the Git repository, so Flux never creates it and this waits in vain"
                );
                out.push(Finding::error(
                    RULE,
                    e.help(format!(
                        "use a Kustomization the repository defines ({}), or add {name} under the cluster's path",
                        if defined.is_empty() { "none yet".to_string() } else { defined.join(", ") }
                    )),
                ));
            }
            if let Some(t) = tmp {
                let _ = std::fs::remove_dir_all(t);
            }
        }
    }
    // Endpoints.
    let gens = talos::gen_configs(cx);
    let kubeconfig = PathBuf::from(crate::render::plan_path(
        plan,
        cx.state_dir,
        &plan.paths.kubeconfig.value,
    ));
    for (i, c) in plan.clusters.iter().enumerate() {
        let Some((host, port)) = host_of(&c.endpoint.value) else {
            continue;
        };
        let at = |msg: String, help: String| {
            super::at(
                UserError::new(msg)
                    .field(format!("clusters[{i}].endpoint"))
                    .help(help),
                &cx.spec.plan_file,
                &c.endpoint,
            )
        };
        if !resolves(&host, port) {
            out.push(Finding::error(
                RULE,
                at(
                    format!("the endpoint host {host:?} does not resolve"),
                    "add it to DNS (or /etc/hosts), or use a control-plane address or VIP".into(),
                ),
            ));
            continue;
        }
        // The names Talos puts in the API server certificate.
        let mut sans: Vec<String> = vec!["localhost".into(), "127.0.0.1".into()];
        sans.extend(
            c.nodes
                .iter()
                .filter(|n| n.role == crate::spec::Role::Controlplane)
                .map(|n| n.ip.value.to_string()),
        );
        let mut from_gen = false;
        for g in gens.iter().filter(|g| g.cluster == c.name.value) {
            from_gen = true;
            if let Some(ep) = &g.endpoint
                && let Some((h, _)) = host_of(ep)
            {
                sans.push(h);
            }
            for c in commands(&g.unit.run) {
                for v in flag_values(&c.argv, &["--additional-sans"]) {
                    sans.extend(v.split(',').map(|s| s.trim().to_string()));
                }
            }
        }
        if from_gen && !sans.contains(&host) {
            out.push(Finding::error(
                RULE,
                at(
                    format!(
                        "the API server certificate will not cover {host:?}: Talos signs it for {}",
                        sans.join(", ")
                    ),
                    "add --additional-sans with the endpoint host to talosctl gen config, or use the endpoint the configs were generated with".into(),
                ),
            ));
            continue;
        }
        if !plan.lab
            && kubeconfig.exists()
            && let Some(msg) = live_name_mismatch(&kubeconfig, &c.context)
        {
            out.push(Finding::error(
                RULE,
                at(
                    format!("the live API server's certificate does not cover {host:?}: {msg}"),
                    "regenerate the API server certificate with the endpoint in its SANs (talosctl gen config --additional-sans, then apply)".into(),
                ),
            ));
        }
    }
    out
}
