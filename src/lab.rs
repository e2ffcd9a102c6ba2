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

/// Environment variable naming the lab directory (a lab shared by several state directories);
/// it overrides the plan's `lab_settings.dir`. Relative to the current directory.
pub const LAB_HOME_ENV: &str = "BOOTSTRAP_LAB_HOME";

/// Where the lab of `plan` lives: `BOOTSTRAP_LAB_HOME`, else `lab_settings.dir` (relative to the
/// plan file), else `<state dir>/lab`.
pub fn lab_dir(plan: &Plan, state_dir: &std::path::Path) -> core::LabDir {
    if let Some(home) = std::env::var_os(LAB_HOME_ENV).filter(|h| !h.is_empty()) {
        return core::LabDir(crate::spec::plan::absolute(std::path::Path::new(&home)));
    }
    match &plan.lab_settings.dir {
        Some(d) => core::LabDir(std::path::PathBuf::from(crate::render::plan_path(
            plan, state_dir, d,
        ))),
        None => core::LabDir::for_state_dir(state_dir),
    }
}

/// Whether the lab lives in the state directory (the default), so that the state lock guards it.
fn lab_in_state_dir(plan: &Plan, state_dir: &std::path::Path) -> bool {
    let dir = lab_dir(plan, state_dir);
    let canon = |p: &std::path::Path| std::fs::canonicalize(p).unwrap_or_else(|_| p.to_path_buf());
    dir.root().starts_with(state_dir) || canon(dir.root()).starts_with(canon(state_dir))
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
        lab_dir: Some(lab_dir(plan, state_dir).0),
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
            if let Some(pid) = h.served_by() {
                tracing::info!(
                    "lab: {} is served by process {pid}; using it",
                    h.dir.root().display()
                );
            }
            for (name, url) in h.endpoints() {
                tracing::info!("lab: cluster {name} serves at {url}");
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
    let dir = lab_dir(&plan, &state_dir);
    match cmd {
        LabCommand::Reset => {
            if let Some(h) = crate::state::Lock::holder(&state_dir) {
                return Err(crate::error::ExitError::new(
                    Exit::Locked,
                    format!("a run holds the state: {h}"),
                )
                .into());
            }
            if let Some(pid) = core::serving_pid(&dir) {
                return Err(served_by(&dir, pid, "; stop it first"));
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
        LabCommand::Outage { cluster, seconds } => outage(&plan, &dir, cluster, *seconds),
        LabCommand::Serve => {
            if let Some(pid) = core::serving_pid(&dir) {
                return Err(served_by(&dir, pid, ""));
            }
            let rt = tokio::runtime::Builder::new_multi_thread()
                .enable_all()
                .build()?;
            rt.block_on(async {
                // A lab in the state directory is the state's: a run must not serve it at the same
                // time. A lab elsewhere is guarded by its own serve lock only.
                let _lock = if lab_in_state_dir(&plan, &state_dir) {
                    match crate::state::Lock::acquire(&state_dir, "lab-serve") {
                        Ok(l) => Some(l),
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
                        Err(crate::state::LockError::Io(e)) => {
                            return Err(color_eyre::Report::from(e));
                        }
                    }
                } else {
                    None
                };
                let lab = start(&plan, &state_dir).await?;
                if let Some(pid) = lab.served_by() {
                    lab.shutdown().await;
                    return Err(served_by(&dir, pid, ""));
                }
                let kubeconfig = dir.kubeconfig();
                let entries: Vec<(String, String, String)> = plan
                    .clusters
                    .iter()
                    .map(|c| {
                        (
                            c.context.clone(),
                            c.name.value.clone(),
                            lab.endpoints()
                                .get(&c.name.value)
                                .cloned()
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

/// Exit 3: the lab is served by another process (`then`: what to do about it).
fn served_by(dir: &core::LabDir, pid: u32, then: &str) -> color_eyre::Report {
    crate::error::ExitError::new(
        Exit::Locked,
        format!(
            "the lab in {} is already served by process {pid}{then}",
            dir.root().display()
        ),
    )
    .into()
}

/// `bootstrap lab outage CLUSTER --seconds N`: the trigger the `api-unreachable` fault pulls, by
/// hand. Returns once the serving process has the API server down (or at once when nobody serves
/// the lab: the outage then holds for whoever serves it before it ends).
fn outage(plan: &Plan, dir: &core::LabDir, cluster: &str, seconds: u64) -> Result<Exit> {
    if plan.cluster(cluster).is_none() {
        let names: Vec<&str> = plan
            .clusters
            .iter()
            .map(|c| c.name.value.as_str())
            .collect();
        return Err(
            crate::error::UserError::new(format!("no cluster `{cluster}` in this plan"))
                .help(format!("the clusters are: {}", names.join(", ")))
                .into(),
        );
    }
    let until = core::start_outage(dir, cluster, seconds)?;
    let applied = core::wait_outage_applied(dir, cluster, until, std::time::Duration::from_secs(5));
    let end = jiff::Timestamp::from_millisecond(until as i64)
        .map(|t| t.strftime("%H:%M:%S UTC").to_string())
        .unwrap_or_default();
    if applied || seconds == 0 {
        eprintln!(
            "the API server of cluster {cluster} is unreachable for {seconds}s (until {end})"
        );
    } else {
        eprintln!(
            "nobody serves the lab in {} now: the API server of cluster {cluster} will be unreachable until {end} if it is served before then",
            dir.root().display()
        );
    }
    Ok(Exit::Ok)
}
