//! What every stand-in shares: finding the lab, injected faults, kube clients for `--kubeconfig` and
//! `--context`, and a runtime.

use std::path::PathBuf;

use crate::cluster::Remote;
use crate::core::{FaultKind, LabDir, Topology};

/// The lab this stand-in runs in, or an error line like a tool that cannot reach anything.
pub fn lab() -> Result<(LabDir, Topology), String> {
    let dir = LabDir::from_env().ok_or_else(|| "this is the bootstrap lab's stand-in; run it through `bootstrap run` on a lab plan (BOOTSTRAP_LAB_DIR is not set)".to_string())?;
    let topo = Topology::load(&dir).map_err(|e| e.to_string())?;
    Ok((dir, topo))
}

/// Apply fail/hang faults for this invocation. Returns an exit code when a fault fires.
pub fn fault(tool: &str, args: &[String]) -> Option<i32> {
    let (dir, topo) = lab().ok()?;
    let line = std::iter::once(tool.to_string())
        .chain(args.iter().cloned())
        .collect::<Vec<_>>()
        .join(" ");
    let mut faults = topo.faults.clone();
    if let Ok(Some(extra)) =
        crate::core::read_json::<Vec<crate::core::Fault>>(&dir.root().join("extra-faults.json"))
    {
        faults.extend(extra);
    }
    for f in &faults {
        match &f.kind {
            FaultKind::Hang { matches } if line.contains(matches.as_str()) => loop {
                std::thread::sleep(std::time::Duration::from_secs(3600));
            },
            FaultKind::Fail {
                matches,
                times,
                stderr,
                exit_code,
            } if line.contains(matches.as_str()) && crate::core::fire(&dir, &f.id, *times) => {
                eprintln!("{stderr}");
                return Some(*exit_code);
            }
            // The API server goes down as this command starts; the command itself goes on and
            // meets the outage if it talks to that server.
            FaultKind::ApiUnreachable {
                cluster,
                matches,
                seconds,
            } if line.contains(matches.as_str()) && crate::core::fire(&dir, &f.id, 1) => {
                if let Ok(until) = crate::core::start_outage(&dir, cluster, *seconds) {
                    crate::core::wait_outage_applied(
                        &dir,
                        cluster,
                        until,
                        std::time::Duration::from_secs(3),
                    );
                }
            }
            _ => {}
        }
    }
    None
}

pub fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime")
}

/// The kubeconfig a tool reads: `--kubeconfig`, else KUBECONFIG, else ~/.kube/config.
pub fn kubeconfig_path(flag: Option<&str>) -> PathBuf {
    if let Some(f) = flag {
        return PathBuf::from(f);
    }
    if let Some(k) = std::env::var_os("KUBECONFIG").filter(|k| !k.is_empty()) {
        let s = k.to_string_lossy().into_owned();
        return PathBuf::from(s.split(':').next().unwrap_or(&s));
    }
    PathBuf::from(std::env::var("HOME").unwrap_or_default()).join(".kube/config")
}

/// A client for `--context` (or the current context).
pub async fn remote(kubeconfig: Option<&str>, context: Option<&str>) -> Result<Remote, String> {
    let path = kubeconfig_path(kubeconfig);
    crate::cluster::client(&path, context)
        .await
        .map(Remote)
        .map_err(|e| format!("{e}"))
}

/// The server URL of `--context` (or the current context) in the kubeconfig a tool reads.
pub fn server_of(kubeconfig: Option<&str>, context: Option<&str>) -> Option<String> {
    let kc = kube::config::Kubeconfig::read_from(kubeconfig_path(kubeconfig)).ok()?;
    let ctx = context
        .map(String::from)
        .or_else(|| kc.current_context.clone())?;
    let cluster = kc
        .contexts
        .iter()
        .find(|c| c.name == ctx)?
        .context
        .as_ref()?
        .cluster
        .clone();
    kc.clusters
        .iter()
        .find(|c| c.name == cluster)?
        .cluster
        .as_ref()?
        .server
        .clone()
}

/// What kubectl prints when a request fails: the server's Status, or, when the server cannot be
/// reached, kubectl's own words (`The connection to the server HOST:PORT was refused - did you
/// specify the right host or port?` for a refused connection: kubectl's `standardErrorMessage` in
/// k8s.io/kubectl/pkg/cmd/util/helpers.go; tests/lab_team.rs runs a real kubectl into an outage).
pub fn request_error(e: &color_eyre::Report, server: Option<&str>) -> String {
    if let Some(kube::Error::Api(s)) = e.downcast_ref::<kube::Error>() {
        return format!("Error from server ({}): {}", s.reason, s.message);
    }
    let chain: Vec<String> = e.chain().map(|c| c.to_string()).collect();
    let host = server
        .map(|s| {
            s.trim_start_matches("https://")
                .trim_start_matches("http://")
                .trim_end_matches('/')
                .to_string()
        })
        .unwrap_or_else(|| "localhost:8080".into());
    if chain.iter().any(|c| c.contains("Connection refused")) {
        return format!(
            "The connection to the server {host} was refused - did you specify the right host or port?"
        );
    }
    format!("Unable to connect to the server: {}", chain.join(": "))
}

/// The value of `--flag VALUE` or `--flag=VALUE` (and short aliases).
pub fn flag(args: &[String], names: &[&str]) -> Option<String> {
    let mut it = args.iter();
    while let Some(a) = it.next() {
        for n in names {
            if a == n {
                return it.next().cloned();
            }
            if let Some(v) = a.strip_prefix(&format!("{n}=")) {
                return Some(v.to_string());
            }
        }
    }
    None
}

/// Every value of a repeatable flag.
pub fn flags(args: &[String], names: &[&str]) -> Vec<String> {
    let mut out = Vec::new();
    let mut i = 0;
    while i < args.len() {
        let a = &args[i];
        for n in names {
            if a == n && i + 1 < args.len() {
                out.push(args[i + 1].clone());
                i += 1;
            } else if let Some(v) = a.strip_prefix(&format!("{n}=")) {
                out.push(v.to_string());
            }
        }
        i += 1;
    }
    out
}

pub fn has(args: &[String], names: &[&str]) -> bool {
    args.iter().any(|a| {
        names.contains(&a.as_str())
            || names
                .iter()
                .any(|n| a.starts_with(&format!("{n}=")) && !a.ends_with("=false"))
    })
}

/// Positional arguments: everything that is not a flag or a flag's value. `valued` lists flags that
/// take a value.
pub fn positionals(args: &[String], valued: &[&str]) -> Vec<String> {
    let mut out = Vec::new();
    let mut i = 0;
    while i < args.len() {
        let a = &args[i];
        if a.starts_with('-') {
            if valued.contains(&a.as_str()) {
                i += 1;
            }
        } else {
            out.push(a.clone());
        }
        i += 1;
    }
    out
}
