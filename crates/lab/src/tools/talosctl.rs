//! `talosctl` stand-in (Talos ≤1.13 wording; facts: real-tools.md §1). Node state lives in the lab's
//! talos.json: a node is in maintenance mode until a config is applied with `--insecure`, installs
//! for a moment (connection refused), then answers only to clients holding its cluster's secrets.
//! `bootstrap` registers the cluster's Node objects with the lab API server, NotReady until a CNI.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde_json::Value;

use super::common;
use crate::cluster::{Objects, Remote};
use crate::core::{LabDir, Topology};
use crate::talos::now_secs;
pub use crate::talos::{NodeState, TalosState};

use crate::talos::INSTALL_SECONDS;

fn fail(msg: &str) -> i32 {
    eprintln!("{msg}");
    1
}

const VALUED: &[&str] = &[
    "-n",
    "--nodes",
    "-e",
    "--endpoints",
    "--talosconfig",
    "--context",
    "-o",
    "--output",
    "-f",
    "--file",
    "--with-secrets",
    "--output-types",
    "-t",
    "--kubernetes-version",
    "--talos-version",
    "--config-patch",
    "--config-patch-control-plane",
    "--config-patch-worker",
    "--install-disk",
    "--install-image",
    "-m",
    "--mode",
    "--wait-timeout",
    "--additional-sans",
    "--dns-domain",
    "--cert-fingerprint",
    "--timeout",
];

pub fn main(args: &[String]) -> i32 {
    if let Some(code) = common::fault("talosctl", args) {
        return code;
    }
    let pos = common::positionals(args, VALUED);
    let sub: Vec<&str> = pos.iter().map(String::as_str).collect();
    match sub.as_slice() {
        ["gen", "secrets", ..] => gen_secrets(args),
        ["gen", "config", rest @ ..] => gen_config(args, rest),
        ["version", ..] => with_lab(|dir, topo| version(args, dir, topo)),
        ["apply-config", ..] | ["apply", ..] => with_lab(|dir, topo| apply_config(args, dir, topo)),
        ["bootstrap", ..] => with_lab(|dir, topo| bootstrap(args, dir, topo)),
        ["kubeconfig", rest @ ..] => with_lab(|dir, topo| kubeconfig(args, rest, dir, topo)),
        ["etcd", "members", ..] => with_lab(|dir, topo| etcd_members(args, dir, topo)),
        ["health", ..] => with_lab(|dir, topo| health(args, dir, topo)),
        [other, ..] => {
            eprintln!(
                "unknown command \"{other}\" for \"talosctl\"\n\nRun 'talosctl --help' for usage."
            );
            1
        }
        [] => {
            eprintln!("A CLI for out-of-band management of Kubernetes nodes created by Talos");
            0
        }
    }
}

fn with_lab(f: impl FnOnce(&LabDir, &Topology) -> i32) -> i32 {
    match common::lab() {
        Ok((d, t)) => f(&d, &t),
        Err(e) => fail(&e),
    }
}

fn abs(p: &str) -> PathBuf {
    let p = PathBuf::from(p);
    if p.is_absolute() {
        p
    } else {
        std::env::current_dir().unwrap_or_default().join(p)
    }
}

fn gen_secrets(args: &[String]) -> i32 {
    let out = common::flag(args, &["-o", "--output-file"]).unwrap_or_else(|| "secrets.yaml".into());
    let force = common::has(args, &["-f", "--force"]);
    if Path::new(&out).exists() && !force {
        return fail(&format!(
            "file \"{out}\" already exists, use --force to overwrite"
        ));
    }
    let id: String = (0..32).map(|_| fastrand::alphanumeric()).collect();
    let text = format!(
        "cluster:\n    id: {id}\n    secret: {}\nsecrets:\n    bootstraptoken: {}\ncerts:\n    os:\n        crt: LAB-{id}\n        key: LAB-KEY\n",
        (0..44)
            .map(|_| fastrand::alphanumeric())
            .collect::<String>(),
        (0..16).map(|_| fastrand::lowercase()).collect::<String>()
    );
    if let Err(e) = std::fs::write(&out, text) {
        return fail(&format!("open {out}: {}", e.to_string().to_lowercase()));
    }
    use std::os::unix::fs::PermissionsExt;
    let _ = std::fs::set_permissions(&out, std::fs::Permissions::from_mode(0o600));
    0
}

fn secrets_id(path: &str) -> Result<String, String> {
    let text = std::fs::read_to_string(path).map_err(|e| {
        format!(
            "failed to load secrets bundle: open {path}: {}",
            e.to_string().to_lowercase()
        )
    })?;
    let v: Value =
        serde_saphyr::from_str(&text).map_err(|e| format!("failed to load secrets bundle: {e}"))?;
    v["cluster"]["id"]
        .as_str()
        .map(String::from)
        .ok_or_else(|| "failed to load secrets bundle: missing cluster id".into())
}

fn gen_config(args: &[String], rest: &[&str]) -> i32 {
    if rest.len() != 2 {
        eprintln!("accepts 2 arg(s), received {}\n", rest.len());
        return 1;
    }
    let (cluster, endpoint) = (rest[0], rest[1]);
    let ok = endpoint.split_once("://").is_some_and(|(s, h)| {
        !s.is_empty()
            && h.rsplit_once(':')
                .is_some_and(|(_, p)| p.parse::<u16>().is_ok())
    });
    if !ok {
        return fail(
            "no scheme and port specified for the cluster endpoint URL\ntry: \"https://192.168.0.1:6443\"",
        );
    }
    for p in common::flags(
        args,
        &[
            "--config-patch",
            "--config-patch-control-plane",
            "--config-patch-worker",
        ],
    ) {
        if let Some(f) = p.strip_prefix('@')
            && !Path::new(f).exists()
        {
            return fail(&format!(
                "failed to load config patches: open {f}: no such file or directory"
            ));
        }
    }
    let id = match common::flag(args, &["--with-secrets"]) {
        Some(s) => match secrets_id(&s) {
            Ok(id) => id,
            Err(e) => return fail(&e),
        },
        None => (0..32).map(|_| fastrand::alphanumeric()).collect(),
    };
    let types: Vec<String> = common::flag(args, &["-t", "--output-types"])
        .unwrap_or_else(|| "controlplane,worker,talosconfig".into())
        .split(',')
        .map(String::from)
        .collect();
    let out = common::flag(args, &["-o", "--output"]).unwrap_or_else(|| ".".into());
    let force = common::has(args, &["-f", "--force"]);
    let kver = common::flag(args, &["--kubernetes-version"]).unwrap_or_else(|| "1.34.2".into());
    let file_for = |t: &str| -> PathBuf {
        if types.len() == 1 {
            abs(&out)
        } else {
            abs(&out).join(if t == "talosconfig" {
                "talosconfig".to_string()
            } else {
                format!("{t}.yaml")
            })
        }
    };
    for t in &types {
        let f = file_for(t);
        if f.exists() && !force {
            return fail(&format!(
                "file \"{}\" already exists, use --force to overwrite",
                f.display()
            ));
        }
    }
    eprintln!("generating PKI and tokens");
    for t in &types {
        let f = file_for(t);
        if let Some(d) = f.parent()
            && !d.exists()
        {
            if types.len() > 1 {
                let _ = std::fs::create_dir_all(d);
            } else {
                return fail(&format!("open {}: no such file or directory", f.display()));
            }
        }
        let text = if t == "talosconfig" {
            format!(
                "context: {cluster}\ncontexts:\n    {cluster}:\n        endpoints:\n            - {}\n        ca: LAB-CA-{id}\n        crt: LAB-CRT-{id}\n        key: LAB-KEY\n",
                endpoint
                    .split("://")
                    .nth(1)
                    .and_then(|h| h.rsplit_once(':'))
                    .map(|(h, _)| h)
                    .unwrap_or("127.0.0.1")
            )
        } else {
            format!(
                "version: v1alpha1\nmachine:\n    type: {t}\n    token: lab\n    ca:\n        crt: LAB-CA-{id}\ncluster:\n    id: {id}\n    clusterName: {cluster}\n    controlPlane:\n        endpoint: {endpoint}\n    kubernetesVersion: {kver}\n    network:\n        cni:\n            name: none\n"
            )
        };
        if let Err(e) = std::fs::write(&f, text) {
            return fail(&format!(
                "open {}: {}",
                f.display(),
                e.to_string().to_lowercase()
            ));
        }
        eprintln!("Created {}", f.display());
    }
    0
}

fn node_ip(args: &[String]) -> Result<String, String> {
    let n = common::flag(args, &["-n", "--nodes"]).or_else(|| common::flag(args, &["-e", "--endpoints"])).ok_or_else(|| "nodes are not set for the command: please use `--nodes` flag or configuration file to set the nodes to run the command against".to_string())?;
    Ok(n)
}

/// The secrets identity in a talosconfig (LAB-CA-<id>).
fn talosconfig_id(args: &[String]) -> Option<String> {
    let path =
        common::flag(args, &["--talosconfig"]).or_else(|| std::env::var("TALOSCONFIG").ok())?;
    let text = std::fs::read_to_string(path).ok()?;
    text.lines()
        .find_map(|l| l.trim().strip_prefix("ca: LAB-CA-").map(String::from))
}

enum Reach {
    Maintenance,
    Installing,
    Ready(NodeState),
}

fn reach(dir: &LabDir, topo: &Topology, ip: &str) -> Reach {
    let st: crate::tools::talosctl::TalosState = crate::core::read_json(&dir.talos())
        .ok()
        .flatten()
        .unwrap_or_default();
    match st.nodes.get(ip) {
        None => Reach::Maintenance,
        Some(n) if now_secs() - n.applied_at < INSTALL_SECONDS / topo.speed.max(0.01) => {
            Reach::Installing
        }
        Some(n) => Reach::Ready(n.clone()),
    }
}

const X509: &str = "rpc error: code = Unavailable desc = connection error: desc = \"transport: authentication handshake failed: tls: failed to verify certificate: x509: certificate signed by unknown authority\"";

fn refused(ip: &str) -> String {
    format!(
        "rpc error: code = Unavailable desc = connection error: desc = \"transport: Error while dialing: dial tcp {ip}:50000: connect: connection refused\""
    )
}

/// An authenticated call to a node: our talosconfig must come from the node's cluster secrets.
fn authed(args: &[String], dir: &LabDir, topo: &Topology, ip: &str) -> Result<NodeState, String> {
    match reach(dir, topo, ip) {
        Reach::Installing => Err(refused(ip)),
        Reach::Maintenance => Err(X509.into()),
        Reach::Ready(n) => {
            if talosconfig_id(args).as_deref() != Some(n.secrets_id.as_str()) {
                Err(X509.into())
            } else {
                Ok(n)
            }
        }
    }
}

fn client_block() -> String {
    "Client:\n\tTag:         v1.11.5\n\tSHA:         lab\n\tBuilt:       \n\tGo version:  go1.24.9\n\tOS/Arch:     linux/amd64".into()
}

fn version(args: &[String], dir: &LabDir, topo: &Topology) -> i32 {
    println!("{}", client_block());
    if common::has(args, &["--client"]) {
        return 0;
    }
    let ip = match node_ip(args) {
        Ok(i) => i,
        Err(e) => return fail(&e),
    };
    println!("Server:");
    match authed(args, dir, topo, &ip) {
        Ok(_) => {
            println!(
                "\tNODE:        {ip}\n\tTag:         v1.11.5\n\tSHA:         lab\n\tBuilt:       \n\tGo version:  go1.24.9\n\tOS/Arch:     linux/amd64\n\tEnabled:     RBAC"
            );
            0
        }
        Err(e) => fail(&format!("error getting version: {e}")),
    }
}

fn apply_config(args: &[String], dir: &LabDir, topo: &Topology) -> i32 {
    let ip = match node_ip(args) {
        Ok(i) => i,
        Err(e) => return fail(&e),
    };
    let Some(file) = common::flag(args, &["-f", "--file"]) else {
        return fail("no filename supplied for configuration");
    };
    let text = match std::fs::read_to_string(&file) {
        Ok(t) => t,
        Err(e) => {
            return fail(&format!(
                "can't read the config file: open {file}: {}",
                e.to_string().to_lowercase()
            ));
        }
    };
    let cfg: Value = match serde_saphyr::from_str(&text) {
        Ok(v) => v,
        Err(e) => {
            return fail(&format!(
                "error applying new configuration: rpc error: code = InvalidArgument desc = failed to parse config: {e}"
            ));
        }
    };
    let insecure = common::has(args, &["-i", "--insecure"]);
    let Some((cluster, node)) = topo.node_by_ip(&ip) else {
        return fail(&format!(
            "error applying new configuration: {}",
            refused(&ip)
        ));
    };
    let state = reach(dir, topo, &ip);
    if insecure {
        match state {
            Reach::Installing => {
                return fail(&format!(
                    "error applying new configuration: {}",
                    refused(&ip)
                ));
            }
            // A configured node's apid requires mutual TLS (facts §1.3).
            Reach::Ready(_) => {
                return fail(
                    "error applying new configuration: rpc error: code = Unavailable desc = connection error: desc = \"error reading server preface: remote error: tls: certificate required\"",
                );
            }
            Reach::Maintenance => {}
        }
    } else if let Err(e) = authed(args, dir, topo, &ip) {
        return fail(&format!("error applying new configuration: {e}"));
    }
    let cfg_cluster = cfg["cluster"]["clusterName"]
        .as_str()
        .unwrap_or("")
        .to_string();
    let secrets_id = cfg["cluster"]["id"].as_str().unwrap_or("").to_string();
    let ns = NodeState {
        cluster: if cfg_cluster.is_empty() {
            cluster.name.clone()
        } else {
            cfg_cluster
        },
        secrets_id,
        machine_type: cfg["machine"]["type"]
            .as_str()
            .unwrap_or("controlplane")
            .into(),
        kubernetes_version: cfg["cluster"]["kubernetesVersion"]
            .as_str()
            .unwrap_or("1.34.2")
            .into(),
        applied_at: if insecure {
            now_secs()
        } else {
            now_secs() - 3600.0
        },
    };
    let bootstrapped = crate::core::update_json(dir, &dir.talos(), |s: &mut TalosState| {
        s.nodes.insert(ip.clone(), ns);
        s.bootstrapped.get(&cluster.name).copied().unwrap_or(false)
    });
    // A node joining a running cluster registers with its API server.
    if matches!(bootstrapped, Ok(true)) {
        let _ = register_nodes(dir, topo, &cluster.name, std::slice::from_ref(&node.name));
    }
    if !insecure {
        eprintln!("Applied configuration without a reboot");
    }
    0
}

fn bootstrap(args: &[String], dir: &LabDir, topo: &Topology) -> i32 {
    let ip = match node_ip(args) {
        Ok(i) => i,
        Err(e) => return fail(&e),
    };
    if ip.contains(',') {
        return fail(&format!(
            "command \"bootstrap\" requires exactly one node (got {})",
            ip.split(',').count()
        ));
    }
    let n = match authed(args, dir, topo, &ip) {
        Ok(n) => n,
        Err(e) => return fail(&format!("error executing bootstrap: {e}")),
    };
    if n.machine_type != "controlplane" {
        return fail(
            "error executing bootstrap: rpc error: code = Unimplemented desc = bootstrap is only available on control plane nodes",
        );
    }
    let Some((cluster, _)) = topo.node_by_ip(&ip) else {
        return fail(&format!("error executing bootstrap: {}", refused(&ip)));
    };
    let already = crate::core::update_json(dir, &dir.talos(), |s: &mut TalosState| {
        let b = s.bootstrapped.entry(cluster.name.clone()).or_insert(false);
        let was = *b;
        *b = true;
        was
    });
    match already {
        Ok(true) => {
            return fail(
                "error executing bootstrap: rpc error: code = AlreadyExists desc = etcd data directory is not empty",
            );
        }
        Ok(false) => {}
        Err(e) => return fail(&e.to_string()),
    }
    let st: TalosState = crate::core::read_json(&dir.talos())
        .ok()
        .flatten()
        .unwrap_or_default();
    let names: Vec<String> = cluster
        .nodes
        .iter()
        .filter(|nd| st.nodes.contains_key(&nd.ip))
        .map(|nd| nd.name.clone())
        .collect();
    if let Err(e) = register_nodes(dir, topo, &cluster.name, &names) {
        return fail(&format!("error executing bootstrap: {e}"));
    }
    0
}

/// The kubelets of these nodes register with their cluster's API server.
fn register_nodes(
    dir: &LabDir,
    topo: &Topology,
    cluster: &str,
    names: &[String],
) -> Result<(), String> {
    let endpoints: BTreeMap<String, String> = crate::core::read_json(&dir.endpoints())
        .ok()
        .flatten()
        .unwrap_or_default();
    let url = endpoints
        .get(cluster)
        .ok_or("the lab's API server is not running")?
        .clone();
    let c = topo.cluster(cluster).ok_or("unknown cluster")?.clone();
    let st: TalosState = crate::core::read_json(&dir.talos())
        .ok()
        .flatten()
        .unwrap_or_default();
    common::runtime().block_on(async move {
        let cfg = kube::Config::new(url.parse().map_err(|e| format!("{e}"))?);
        let client = kube::Client::try_from(cfg).map_err(|e| e.to_string())?;
        let r = Remote(client);
        for name in names {
            let Some(n) = c.nodes.iter().find(|n| &n.name == name) else {
                continue;
            };
            let kver = st
                .nodes
                .get(&n.ip)
                .map(|s| s.kubernetes_version.clone())
                .unwrap_or_else(|| "1.34.2".into());
            let node = crate::sim::kubelet::node_object(name, &n.ip, &n.role, &kver);
            crate::sim::kubelet::register(&r, node)
                .await
                .map_err(|e| format!("{e:#}"))?;
        }
        Ok(())
    })
}

fn kubeconfig(args: &[String], rest: &[&str], dir: &LabDir, topo: &Topology) -> i32 {
    let ip = match node_ip(args) {
        Ok(i) => i,
        Err(e) => return fail(&e),
    };
    let n = match authed(args, dir, topo, &ip) {
        Ok(n) => n,
        Err(e) => return fail(&format!("error retrieving kubeconfig: {e}")),
    };
    let st: TalosState = crate::core::read_json(&dir.talos())
        .ok()
        .flatten()
        .unwrap_or_default();
    if !st.bootstrapped.get(&n.cluster).copied().unwrap_or(false) {
        return fail(
            "error retrieving kubeconfig: rpc error: code = Unavailable desc = kubeconfig is not available yet: the cluster is not bootstrapped",
        );
    }
    let mut path = rest.first().map(PathBuf::from).unwrap_or_else(|| {
        PathBuf::from(std::env::var("HOME").unwrap_or_default()).join(".kube/config")
    });
    if path.is_dir() {
        path = path.join("kubeconfig");
    }
    let endpoints: BTreeMap<String, String> = crate::core::read_json(&dir.endpoints())
        .ok()
        .flatten()
        .unwrap_or_default();
    let Some(url) = endpoints.get(&n.cluster) else {
        return fail("error retrieving kubeconfig: the lab's API server is not running");
    };
    let force = common::has(args, &["-f", "--force"]);
    let mut context = format!("admin@{}", n.cluster);
    // Each call mints a new admin certificate, so an existing entry always differs: without
    // --force (and no terminal to ask on) talosctl renames (facts §1.6).
    if !force && let Some(cfg) = crate::apiserver::kubeconfig::read_kubeconfig(&path) {
        let exists = |name: &str| {
            cfg["contexts"]
                .as_array()
                .is_some_and(|a| a.iter().any(|x| x["name"].as_str() == Some(name)))
        };
        if exists(&context) {
            let mut i = 1;
            while exists(&format!("{context}-{i}")) {
                i += 1;
            }
            let new = format!("{context}-{i}");
            println!("renamed auth info \"{context}\" -> \"{new}\"");
            println!("renamed context \"{context}\" -> \"{new}\"");
            context = new;
        }
    }
    match crate::apiserver::kubeconfig::write_kubeconfig(
        &path,
        &[(context.clone(), n.cluster.clone(), url.clone())],
        Some(&context),
    ) {
        Ok(()) => 0,
        Err(e) => fail(&format!("error writing kubeconfig: {e}")),
    }
}

fn etcd_members(args: &[String], dir: &LabDir, topo: &Topology) -> i32 {
    let ip = match node_ip(args) {
        Ok(i) => i,
        Err(e) => return fail(&e),
    };
    let n = match authed(args, dir, topo, &ip) {
        Ok(n) => n,
        Err(e) => return fail(&format!("error from node {ip}: {e}")),
    };
    if n.machine_type != "controlplane" {
        return fail(&format!(
            "error from node {ip}: rpc error: code = Unimplemented desc = member list is only available on control plane nodes"
        ));
    }
    let st: TalosState = crate::core::read_json(&dir.talos())
        .ok()
        .flatten()
        .unwrap_or_default();
    if !st.bootstrapped.get(&n.cluster).copied().unwrap_or(false) {
        // Lab approximation: etcd does not run until the cluster is bootstrapped.
        return fail(&format!(
            "error from node {ip}: rpc error: code = Unavailable desc = etcd is not running: the cluster is not bootstrapped"
        ));
    }
    let Some(c) = topo.cluster(&n.cluster) else {
        return 1;
    };
    println!(
        "NODE          ID                 HOSTNAME   PEER URLS                   CLIENT URLS                 LEARNER"
    );
    for (i, m) in c
        .nodes
        .iter()
        .filter(|m| st.nodes.contains_key(&m.ip))
        .enumerate()
    {
        println!(
            "{ip}   {:016x}   {}   https://{}:2380   https://{}:2379   false",
            0x1000 + i as u64,
            m.name,
            m.ip,
            m.ip
        );
    }
    0
}

fn health(args: &[String], dir: &LabDir, topo: &Topology) -> i32 {
    let ip = match node_ip(args) {
        Ok(i) => i,
        Err(e) => return fail(&e),
    };
    let n = match authed(args, dir, topo, &ip) {
        Ok(n) => n,
        Err(e) => return fail(&format!("healthcheck error: {e}")),
    };
    let wait = common::flag(args, &["--wait-timeout"])
        .and_then(|w| humantime::parse_duration(&w).ok())
        .unwrap_or(std::time::Duration::from_secs(1200));
    let Some(c) = topo.cluster(&n.cluster).cloned() else {
        return 1;
    };
    eprintln!(
        "discovered nodes: [{}]",
        c.nodes
            .iter()
            .map(|x| format!("{:?}", x.ip))
            .collect::<Vec<_>>()
            .join(" ")
    );
    for s in [
        "etcd to be healthy",
        "etcd members to be consistent across nodes",
        "etcd members to be control plane nodes",
        "apid to be ready",
        "all nodes memory sizes",
        "all nodes disk sizes",
        "no diagnostics",
        "kubelet to be healthy",
        "all nodes to finish boot sequence",
        "all k8s nodes to report",
    ] {
        eprintln!("waiting for {s}: ...");
        eprintln!("waiting for {s}: OK");
    }
    eprintln!("waiting for all k8s nodes to report ready: ...");
    let endpoints: BTreeMap<String, String> = crate::core::read_json(&dir.endpoints())
        .ok()
        .flatten()
        .unwrap_or_default();
    let url = endpoints.get(&c.name).cloned().unwrap_or_default();
    let deadline = std::time::Instant::now() + wait;
    let ready = common::runtime().block_on(async {
        let Ok(u) = url.parse() else { return false };
        let Ok(client) = kube::Client::try_from(kube::Config::new(u)) else {
            return false;
        };
        let r = Remote(client);
        loop {
            let nodes = r.list("v1", "Node", None, None).await.unwrap_or_default();
            let ok = !nodes.is_empty()
                && nodes.iter().all(|n| {
                    n["status"]["conditions"].as_array().is_some_and(|cs| {
                        cs.iter()
                            .any(|c| c["type"] == "Ready" && c["status"] == "True")
                    })
                });
            if ok {
                return true;
            }
            if std::time::Instant::now() >= deadline {
                return false;
            }
            tokio::time::sleep(std::time::Duration::from_millis(200)).await;
        }
    });
    if !ready {
        return fail(
            "healthcheck error: rpc error: code = Unknown desc = context deadline exceeded",
        );
    }
    eprintln!("waiting for all k8s nodes to report ready: OK");
    for s in [
        "all control plane static pods to be running",
        "all control plane components to be ready",
    ] {
        eprintln!("waiting for {s}: ...");
        eprintln!("waiting for {s}: OK");
    }
    eprintln!("waiting for kube-proxy to report ready: ...");
    eprintln!("waiting for kube-proxy to report ready: SKIP");
    for s in [
        "coredns to report ready",
        "all k8s nodes to report schedulable",
    ] {
        eprintln!("waiting for {s}: ...");
        eprintln!("waiting for {s}: OK");
    }
    0
}
