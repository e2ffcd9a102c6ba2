//! The lab wired into the core: a `lab: true` plan's clusters as the lab's topology, the lab as
//! the engine's [`Environment`], and `bootstrap lab status|reset|serve`.
//!
//! The lab itself (API servers, simulated controllers, tool stand-ins) is the `bootstrap-lab`
//! crate; this module is the only place the core names it.

use bootstrap_lab::core::{self, ClusterTopo, GitTopo, NodeTopo, Topology};
use bootstrap_lab::{Lab, LabConfig, LabHandle, apiserver, cluster, tools};

use crate::cli::{Global, LabCommand};
use crate::engine::environment::Environment;
use crate::error::{Exit, Result};
use crate::spec::Plan;
use crate::spec::plan::Role;

/// The lab's view of a plan: its clusters and nodes, the Git source and the faults to inject.
pub fn topology(plan: &Plan) -> Result<Topology> {
    Ok(Topology {
        speed: plan.lab_settings.speed,
        clusters: plan
            .clusters
            .iter()
            .map(|c| ClusterTopo {
                name: c.name.value.clone(),
                id: c.id.value,
                context: c.context.clone(),
                talos_context: c.talos_context.clone(),
                endpoint: c.endpoint.value.clone(),
                pod_cidr: c.pod_cidr.value.to_string(),
                service_cidr: c.service_cidr.value.to_string(),
                dns_ip: c.dns_ip.value.to_string(),
                nodes: c
                    .nodes
                    .iter()
                    .map(|n| NodeTopo {
                        name: n.name.value.clone(),
                        ip: n.ip.value.to_string(),
                        role: if n.role == Role::Controlplane {
                            "controlplane".into()
                        } else {
                            "worker".into()
                        },
                    })
                    .collect(),
            })
            .collect(),
        git: GitTopo {
            owner: plan.git.owner.clone(),
            repository: plan.git.repository.clone(),
            branch: plan.git.branch.clone(),
            paths: plan.git.paths.clone(),
        },
        faults: Topology::faults(&plan.lab_settings.faults)?,
    })
}

/// How to start the lab for `plan` with its state in `state_dir`, the tool links pointing at
/// `exe` (the `bootstrap` binary).
pub fn config(
    plan: &Plan,
    state_dir: &std::path::Path,
    exe: &std::path::Path,
) -> Result<LabConfig> {
    Ok(LabConfig {
        topology: topology(plan)?,
        state_dir: state_dir.to_path_buf(),
        exe: exe.to_path_buf(),
        kubeconfig: Some(std::path::PathBuf::from(crate::render::plan_path(
            plan,
            state_dir,
            &plan.paths.kubeconfig.value,
        ))),
        secret_refs: plan
            .secrets
            .values()
            .map(|s| s.value.clone())
            .filter(|s| crate::secrets::is_reference(s))
            .collect(),
    })
}

/// Start the lab of `plan`, the tool links pointing at this executable.
pub async fn start(plan: &Plan, state_dir: &std::path::Path) -> Result<LabHandle> {
    Lab::start(&config(plan, state_dir, &std::env::current_exe()?)?).await
}

/// The lab as the engine's [`Environment`](crate::engine::environment::Environment): started for a
/// run of a `lab: true` plan, stopped after it.
pub struct LabEnvironment {
    plan: Plan,
    state_dir: std::path::PathBuf,
    handle: Option<LabHandle>,
}

impl Environment for LabEnvironment {
    fn start(&mut self) -> futures_util::future::BoxFuture<'_, Result<Vec<(String, String)>>> {
        Box::pin(async move {
            let h = start(&self.plan, &self.state_dir).await?;
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
pub fn environment_for(ws: &crate::workspace::Workspace) -> Box<dyn Environment> {
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
async fn lab_status(plan: &Plan, dir: &core::LabDir) -> Result<Vec<serde_json::Value>> {
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
                let lab = start(&plan, &state_dir).await?;
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
