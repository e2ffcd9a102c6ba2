//! The lab: a simulated two-cluster environment (API servers, simulated controllers, tool stand-ins,
//! faults) that tests and rehearsals run against.
//!
//! Owns everything simulated. It never touches a real machine.

pub mod apiserver;
pub mod charts;
pub mod cluster;
pub mod core;
pub mod sim;
pub mod talos;
pub mod tools;

use crate::cli::{Global, LabCommand};
use crate::error::{Exit, Result};

/// The lab, started in-process.
pub struct Lab;

/// A running lab: its API servers and simulated controllers.
pub struct LabHandle {
    pub dir: core::LabDir,
    pub servers: Vec<(String, apiserver::ApiServer)>,
    sims: Vec<tokio::task::JoinHandle<()>>,
}

impl Lab {
    /// Start the lab for a plan: write the topology, start one API server per cluster (on last
    /// run's port when free), the simulated controllers, the tool links and the lab vault.
    pub async fn start(plan: &crate::spec::Plan, state_dir: &std::path::Path) -> Result<LabHandle> {
        Self::start_with(plan, state_dir, &std::env::current_exe()?).await
    }

    /// Like [`Lab::start`], with the tool links pointing at `exe` (the `bootstrap` binary).
    pub async fn start_with(
        plan: &crate::spec::Plan,
        state_dir: &std::path::Path,
        exe: &std::path::Path,
    ) -> Result<LabHandle> {
        let dir = core::LabDir::for_state_dir(state_dir);
        std::fs::create_dir_all(dir.root())?;
        let topo = core::Topology::from_plan(plan)?;
        core::write_json(&dir.topology(), &topo)?;
        sim::flux::install_gitops_tree(&dir)?;
        seed_vault(&dir, plan)?;
        link_tools(&dir, exe)?;
        let old: std::collections::BTreeMap<String, String> =
            core::read_json(&dir.endpoints())?.unwrap_or_default();
        let mut servers = Vec::new();
        let mut endpoints = std::collections::BTreeMap::new();
        let mut sims = Vec::new();
        for c in &topo.clusters {
            let port = old
                .get(&c.name)
                .and_then(|u| u.rsplit(':').next())
                .and_then(|p| p.parse().ok());
            let server = apiserver::serve(apiserver::ServeOptions {
                cluster: c.name.clone(),
                persist: Some(dir.cluster_objects(&c.name)),
                port,
            })
            .await?;
            endpoints.insert(c.name.clone(), server.url());
            sims.push(sim::start(
                &c.name,
                server.store.clone(),
                topo.clone(),
                dir.clone(),
            ));
            servers.push((c.name.clone(), server));
        }
        sims.push(sim::mesh::start(
            servers
                .iter()
                .map(|(n, s)| (n.clone(), s.store.clone()))
                .collect(),
            topo.clone(),
        ));
        core::write_json(&dir.endpoints(), &endpoints)?;
        // Kubeconfigs written in an earlier run point at the old ports: keep them valid.
        if endpoints != old {
            let kubeconfig = std::path::PathBuf::from(crate::render::plan_path(
                plan,
                state_dir,
                &plan.paths.kubeconfig.value,
            ));
            if let Some(cfg) = apiserver::kubeconfig::read_kubeconfig(&kubeconfig) {
                let entries: Vec<(String, String, String)> = topo
                    .clusters
                    .iter()
                    .filter(|c| {
                        cfg["contexts"].as_array().is_some_and(|a| {
                            a.iter()
                                .any(|x| x["name"].as_str() == Some(c.context.as_str()))
                        })
                    })
                    .map(|c| {
                        (
                            c.context.clone(),
                            c.name.clone(),
                            endpoints[&c.name].clone(),
                        )
                    })
                    .collect();
                if !entries.is_empty() {
                    apiserver::kubeconfig::write_kubeconfig(&kubeconfig, &entries, None)?;
                }
            }
        }
        Ok(LabHandle { dir, servers, sims })
    }
}

/// Links named after each tool, pointing at this binary (the stand-ins are multi-call).
fn link_tools(dir: &core::LabDir, exe: &std::path::Path) -> Result<()> {
    std::fs::create_dir_all(dir.bin())?;
    for t in tools::TOOLS {
        let link = dir.bin().join(t);
        let _ = std::fs::remove_file(&link);
        std::os::unix::fs::symlink(exe, &link)?;
    }
    Ok(())
}

/// Put every secret the plan references into the lab vault, with a made-up value, once.
fn seed_vault(dir: &core::LabDir, plan: &crate::spec::Plan) -> Result<()> {
    let refs: Vec<String> = plan
        .secrets
        .values()
        .map(|s| s.value.clone())
        .filter(|s| crate::secrets::is_reference(s))
        .collect();
    core::update_json(dir, &dir.vault(), |v: &mut tools::op::Vault| {
        for r in &refs {
            v.ensure_reference(r);
        }
    })?;
    Ok(())
}

impl LabHandle {
    /// Environment for steps: the tool links first on PATH, and the lab directory.
    pub fn step_env(&self) -> Vec<(String, String)> {
        let path = std::env::var_os("PATH")
            .map(|p| p.to_string_lossy().into_owned())
            .unwrap_or_default();
        let bin = std::fs::canonicalize(self.dir.bin()).unwrap_or_else(|_| self.dir.bin());
        let root = std::fs::canonicalize(self.dir.root())
            .unwrap_or_else(|_| self.dir.root().to_path_buf());
        vec![
            ("PATH".into(), format!("{}:{path}", bin.display())),
            (core::LAB_DIR_ENV.into(), root.display().to_string()),
        ]
    }
    pub async fn shutdown(self) {
        for s in &self.sims {
            s.abort();
        }
        for (_, s) in self.servers {
            s.shutdown().await;
        }
    }
}

/// The lab as the engine's [`Environment`](crate::engine::environment::Environment): started for a
/// run of a `lab: true` plan, stopped after it.
pub struct LabEnvironment {
    plan: crate::spec::Plan,
    state_dir: std::path::PathBuf,
    handle: Option<LabHandle>,
}

impl crate::engine::environment::Environment for LabEnvironment {
    fn start(&mut self) -> futures_util::future::BoxFuture<'_, Result<Vec<(String, String)>>> {
        Box::pin(async move {
            let h = Lab::start(&self.plan, &self.state_dir).await?;
            for (name, s) in &h.servers {
                tracing::info!("lab: cluster {name} serves at {}", s.url());
            }
            let env = h.step_env();
            self.handle = Some(h);
            Ok(env)
        })
    }
    fn stop(&mut self) -> futures_util::future::BoxFuture<'_, ()> {
        Box::pin(async move {
            if let Some(h) = self.handle.take() {
                h.shutdown().await;
            }
        })
    }
}

/// The environment for a workspace: the lab for `lab: true` plans, else the real world.
pub fn environment_for(
    ws: &crate::workspace::Workspace,
) -> Box<dyn crate::engine::environment::Environment> {
    if ws.spec.plan.lab {
        Box::new(LabEnvironment {
            plan: ws.spec.plan.clone(),
            state_dir: ws.state_dir.clone(),
            handle: None,
        })
    } else {
        Box::new(crate::engine::environment::RealWorld)
    }
}

/// What `lab status` shows: each cluster, its nodes (Talos and Kubernetes state) and its deployed
/// Helm releases.
async fn lab_status(
    plan: &crate::spec::Plan,
    dir: &core::LabDir,
) -> Result<Vec<serde_json::Value>> {
    use cluster::Objects;
    let talos: tools::talosctl::TalosState = core::read_json(&dir.talos())?.unwrap_or_default();
    let mut out = Vec::new();
    for c in &plan.clusters {
        let name = &c.name.value;
        let local = cluster::Local(apiserver::Store::new(Some(dir.cluster_objects(name))));
        let knodes = local
            .list("v1", "Node", None, None)
            .await
            .unwrap_or_default();
        let nodes: Vec<serde_json::Value> = c
            .nodes
            .iter()
            .map(|n| {
                let t = if talos.nodes.contains_key(&n.ip.value.to_string()) {
                    "configured"
                } else {
                    "maintenance"
                };
                let k = knodes
                    .iter()
                    .find(|x| x["metadata"]["name"] == n.name.value.as_str())
                    .map(|x| {
                        let ready = x["status"]["conditions"].as_array().is_some_and(|cs| {
                            cs.iter().any(|c| c["type"] == "Ready" && c["status"] == "True")
                        });
                        if ready { "Ready" } else { "NotReady" }
                    })
                    .unwrap_or("not registered");
                serde_json::json!({"name": n.name.value, "ip": n.ip.value.to_string(), "talos": t, "kubernetes": k})
            })
            .collect();
        let secrets = local
            .list("v1", "Secret", None, Some("owner=helm"))
            .await
            .unwrap_or_default();
        let mut rel: Vec<String> = secrets
            .iter()
            .filter(|s| s["metadata"]["labels"]["status"] == "deployed")
            .map(|s| {
                format!(
                    "{}/{} v{}",
                    s["metadata"]["namespace"].as_str().unwrap_or(""),
                    s["metadata"]["labels"]["name"].as_str().unwrap_or(""),
                    s["metadata"]["labels"]["version"].as_str().unwrap_or("")
                )
            })
            .collect();
        rel.sort();
        out.push(serde_json::json!({
            "name": name,
            "id": c.id.value,
            "context": c.context,
            "bootstrapped": talos.bootstrapped.get(name).copied().unwrap_or(false),
            "nodes": nodes,
            "helm_releases": rel,
        }));
    }
    Ok(out)
}

/// `bootstrap lab status|reset|serve`.
pub fn lab_command(g: &Global, cmd: &LabCommand) -> Result<Exit> {
    let (plan, _) = crate::spec::load_plan(&g.plan)?;
    if !plan.lab {
        return Err(
            crate::error::UserError::new("this plan is not a lab plan (lab: false)")
                .in_file(&g.plan)
                .field("lab")
                .help("use a lab plan, such as plans/lab.yaml")
                .into(),
        );
    }
    let state_dir = crate::workspace::state_dir_for(g, &plan.name.value);
    let dir = core::LabDir::for_state_dir(&state_dir);
    match cmd {
        LabCommand::Reset => {
            if let Some(h) = crate::state::Lock::holder(&state_dir) {
                return Err(crate::error::ExitError::new(
                    Exit::Locked,
                    format!("a run holds the state: {h}"),
                )
                .into());
            }
            match std::fs::remove_dir_all(dir.root()) {
                Ok(()) => eprintln!("removed the lab in {}", dir.root().display()),
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                    eprintln!("no lab in {}", dir.root().display())
                }
                Err(e) => return Err(e.into()),
            }
            Ok(Exit::Ok)
        }
        LabCommand::Status => {
            let rt = tokio::runtime::Builder::new_multi_thread()
                .enable_all()
                .build()?;
            let clusters = rt.block_on(lab_status(&plan, &dir))?;
            if g.output == crate::cli::OutputMode::Json {
                // `lab status --output json`: one document (schema 1).
                println!("{}", serde_json::json!({"schema": 1, "clusters": clusters}));
                return Ok(Exit::Ok);
            }
            for c in &clusters {
                println!(
                    "cluster {} (id {}, context {}){}",
                    c["name"].as_str().unwrap_or(""),
                    c["id"],
                    c["context"].as_str().unwrap_or(""),
                    if c["bootstrapped"] == true {
                        ", bootstrapped"
                    } else {
                        ""
                    }
                );
                for n in c["nodes"].as_array().into_iter().flatten() {
                    println!(
                        "  node {:<10} {:<14} talos: {:<12} kubernetes: {}",
                        n["name"].as_str().unwrap_or(""),
                        n["ip"].as_str().unwrap_or(""),
                        n["talos"].as_str().unwrap_or(""),
                        n["kubernetes"].as_str().unwrap_or("")
                    );
                }
                let rel: Vec<&str> = c["helm_releases"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .filter_map(|r| r.as_str())
                    .collect();
                println!(
                    "  helm releases: {}",
                    if rel.is_empty() {
                        "none".to_string()
                    } else {
                        rel.join(", ")
                    }
                );
            }
            Ok(Exit::Ok)
        }
        LabCommand::Serve => {
            let rt = tokio::runtime::Builder::new_multi_thread()
                .enable_all()
                .build()?;
            rt.block_on(async {
                let _lock = match crate::state::Lock::acquire(&state_dir, "lab-serve") {
                    Ok(l) => l,
                    Err(crate::state::LockError::Held(h)) => {
                        return Err(crate::error::ExitError::new(
                            Exit::Locked,
                            format!(
                                "a run holds the state: {}",
                                h.map(|h| h.to_string()).unwrap_or_default()
                            ),
                        )
                        .into());
                    }
                    Err(crate::state::LockError::Io(e)) => return Err(color_eyre::Report::from(e)),
                };
                let lab = Lab::start(&plan, &state_dir).await?;
                let kubeconfig = dir.root().join("kubeconfig");
                let entries: Vec<(String, String, String)> = plan
                    .clusters
                    .iter()
                    .map(|c| {
                        (
                            c.context.clone(),
                            c.name.value.clone(),
                            lab.servers
                                .iter()
                                .find(|(n, _)| *n == c.name.value)
                                .map(|(_, s)| s.url())
                                .unwrap_or_default(),
                        )
                    })
                    .collect();
                apiserver::kubeconfig::write_kubeconfig(&kubeconfig, &entries, None)?;
                println!(
                    "The lab is serving. Use it with:\n  export KUBECONFIG={}",
                    std::fs::canonicalize(&kubeconfig)
                        .unwrap_or(kubeconfig.clone())
                        .display()
                );
                for (ctx, cluster, url) in &entries {
                    println!("  kubectl --context {ctx} get nodes    # {cluster} at {url}");
                }
                println!("Press Ctrl-C to stop.");
                let _ = tokio::signal::ctrl_c().await;
                lab.shutdown().await;
                Ok::<_, color_eyre::Report>(())
            })?;
            Ok(Exit::Ok)
        }
    }
}
