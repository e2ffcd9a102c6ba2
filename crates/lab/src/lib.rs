//! The lab: a simulated two-cluster environment (API servers, simulated controllers, tool stand-ins,
//! faults) that tests and rehearsals run against.
//!
//! Owns everything simulated. It never touches a real machine. It knows nothing of the `bootstrap`
//! core (plans, phases, the engine): the core describes the clusters as a [`core::Topology`] and
//! starts it through [`Lab::start`]; the stand-in tools run when the binary is invoked under a
//! tool's name ([`tools::dispatch_by_argv0`]).

pub mod apiserver;
pub mod charts;
pub mod cluster;
pub mod core;
pub mod sim;
pub mod talos;
pub mod tools;

/// Every fallible lab operation: an error for the user's eyes, with its chain of causes.
pub type Result<T, E = color_eyre::Report> = std::result::Result<T, E>;

/// What a lab needs to start: the clusters, where it lives and what it links.
#[derive(Debug, Clone)]
pub struct LabConfig {
    /// The clusters, nodes, Git source and faults to simulate.
    pub topology: core::Topology,
    /// The run's state directory; the lab lives in its `lab/` subdirectory.
    pub state_dir: std::path::PathBuf,
    /// The multi-call binary the tool links point at (the `bootstrap` binary).
    pub exe: std::path::PathBuf,
    /// The kubeconfig earlier runs wrote, kept valid when the API servers' ports change.
    pub kubeconfig: Option<std::path::PathBuf>,
    /// `op://` references to seed into the lab vault with made-up values.
    pub secret_refs: Vec<String>,
}

/// The lab, started in-process.
pub struct Lab;

/// A running lab: its API servers and simulated controllers.
pub struct LabHandle {
    pub dir: core::LabDir,
    pub servers: Vec<(String, apiserver::ApiServer)>,
    sims: Vec<tokio::task::JoinHandle<()>>,
}

impl Lab {
    /// Start the lab: write the topology, start one API server per cluster (on last run's port
    /// when free), the simulated controllers, the tool links and the lab vault.
    pub async fn start(cfg: &LabConfig) -> Result<LabHandle> {
        let dir = core::LabDir::for_state_dir(&cfg.state_dir);
        std::fs::create_dir_all(dir.root())?;
        let topo = cfg.topology.clone();
        core::write_json(&dir.topology(), &topo)?;
        sim::flux::install_gitops_tree(&dir)?;
        seed_vault(&dir, &cfg.secret_refs)?;
        link_tools(&dir, &cfg.exe)?;
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
        // The kubelets' part that runs the flow check's probe Pods sees every cluster.
        sims.push(sim::probe::start(
            servers
                .iter()
                .map(|(n, s)| (n.clone(), s.store.clone()))
                .collect(),
            topo.clone(),
            dir.clone(),
        ));
        core::write_json(&dir.endpoints(), &endpoints)?;
        // Kubeconfigs written in an earlier run point at the old ports: keep them valid.
        if endpoints != old
            && let Some(kubeconfig) = &cfg.kubeconfig
            && let Some(kc) = apiserver::kubeconfig::read_kubeconfig(kubeconfig)
        {
            let entries: Vec<(String, String, String)> = topo
                .clusters
                .iter()
                .filter(|c| {
                    kc["contexts"].as_array().is_some_and(|a| {
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
                apiserver::kubeconfig::write_kubeconfig(kubeconfig, &entries, None)?;
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

/// Put every referenced secret into the lab vault, with a made-up value, once.
fn seed_vault(dir: &core::LabDir, refs: &[String]) -> Result<()> {
    core::update_json(dir, &dir.vault(), |v: &mut tools::op::Vault| {
        for r in refs {
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
