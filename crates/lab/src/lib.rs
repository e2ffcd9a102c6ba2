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
    /// The run's state directory; by default the lab lives in its `lab/` subdirectory.
    pub state_dir: std::path::PathBuf,
    /// Where the lab lives when not in `<state_dir>/lab` (a lab shared by several state
    /// directories: several people's runs, or a team test's two processes).
    pub lab_dir: Option<std::path::PathBuf>,
    /// The multi-call binary the tool links point at (the `bootstrap` binary).
    pub exe: std::path::PathBuf,
    /// The kubeconfig earlier runs wrote, kept valid when the API servers' ports change.
    pub kubeconfig: Option<std::path::PathBuf>,
    /// `op://` references to seed into the lab vault with made-up values.
    pub secret_refs: Vec<String>,
}

impl LabConfig {
    /// The lab directory this config names.
    pub fn dir(&self) -> core::LabDir {
        match &self.lab_dir {
            Some(d) => core::LabDir(d.clone()),
            None => core::LabDir::for_state_dir(&self.state_dir),
        }
    }
}

/// The lab, started in-process.
pub struct Lab;

/// What the serving process runs: the API servers and the simulated controllers.
struct Served {
    servers: Vec<(String, apiserver::ApiServer)>,
    sims: Vec<tokio::task::JoinHandle<()>>,
    /// The serve lock, held while this process serves.
    _lock: std::fs::File,
}

/// A lab this process uses: either it serves it (API servers and controllers run here), or another
/// live process does and this one is attached (it only uses the endpoints). An attached process
/// serves the lab itself as soon as the serving one is gone.
pub struct LabHandle {
    pub dir: core::LabDir,
    endpoints: std::collections::BTreeMap<String, String>,
    served: std::sync::Arc<tokio::sync::Mutex<Option<Served>>>,
    /// The pid of the serving process, when this one is attached.
    served_by: Option<u32>,
    takeover: Option<tokio::task::JoinHandle<()>>,
}

/// How long an attaching process waits for the serving one's API servers to come up.
const ATTACH_WAIT: std::time::Duration = std::time::Duration::from_secs(30);

impl Lab {
    /// Start the lab: the tool links and the lab vault; then either serve it (take the serve
    /// lock, write the topology, start one API server per cluster on last time's port when free,
    /// and the simulated controllers) or, when a live process serves it already, attach to it.
    pub async fn start(cfg: &LabConfig) -> Result<LabHandle> {
        let dir = cfg.dir();
        std::fs::create_dir_all(dir.root())?;
        link_state_dir(cfg, &dir)?;
        seed_vault(&dir, &cfg.secret_refs)?;
        link_tools(&dir, &cfg.exe)?;
        let deadline = std::time::Instant::now() + ATTACH_WAIT;
        let (served, served_by) = loop {
            match try_serve(&dir, &cfg.topology).await? {
                Some(s) => break (Some(s), None),
                None => {
                    if let Some(pid) = core::serving_pid(&dir) {
                        break (None, Some(pid));
                    }
                }
            }
            if std::time::Instant::now() > deadline {
                color_eyre::eyre::bail!(
                    "the lab in {} is locked by a process that does not serve it (no pid in {} after {}s)",
                    dir.root().display(),
                    dir.serve_lock().display(),
                    ATTACH_WAIT.as_secs()
                );
            }
            tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        };
        let endpoints: std::collections::BTreeMap<String, String> =
            core::read_json(&dir.endpoints())?.unwrap_or_default();
        if let Some(kubeconfig) = &cfg.kubeconfig {
            repoint_kubeconfig(kubeconfig, &cfg.topology, &endpoints)?;
        }
        let served = std::sync::Arc::new(tokio::sync::Mutex::new(served));
        let takeover = served_by.map(|_| {
            tokio::spawn(take_over_when_free(
                dir.clone(),
                cfg.topology.clone(),
                served.clone(),
            ))
        });
        Ok(LabHandle {
            dir,
            endpoints,
            served,
            served_by,
            takeover,
        })
    }
}

/// Serve the lab if nobody does: take the serve lock and start everything. None: the lock is held.
async fn try_serve(dir: &core::LabDir, topo: &core::Topology) -> Result<Option<Served>> {
    use std::io::Write;
    let mut lock = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .read(true)
        .write(true)
        .open(dir.serve_lock())?;
    match lock.try_lock() {
        Ok(()) => {}
        Err(std::fs::TryLockError::WouldBlock) => return Ok(None),
        Err(std::fs::TryLockError::Error(e)) => return Err(e.into()),
    }
    // Not ready until the pid is written, after the servers are up.
    lock.set_len(0)?;
    core::write_json(&dir.topology(), topo)?;
    sim::flux::install_gitops_tree(dir)?;
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
            lab: Some(dir.clone()),
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
    let entries: Vec<(String, String, String)> = topo
        .clusters
        .iter()
        .map(|c| {
            (
                c.context.clone(),
                c.name.clone(),
                endpoints[&c.name].clone(),
            )
        })
        .collect();
    apiserver::kubeconfig::write_kubeconfig(&dir.kubeconfig(), &entries, None)?;
    write!(lock, "{}", std::process::id())?;
    lock.sync_all()?;
    Ok(Some(Served {
        servers,
        sims,
        _lock: lock,
    }))
}

/// An attached process serves the lab once the serving one is gone (its lock is released when it
/// exits, however it exits). The API servers come back on the same ports when free, so the
/// endpoints and kubeconfigs stay valid.
async fn take_over_when_free(
    dir: core::LabDir,
    topo: core::Topology,
    served: std::sync::Arc<tokio::sync::Mutex<Option<Served>>>,
) {
    loop {
        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
        match try_serve(&dir, &topo).await {
            Ok(Some(s)) => {
                tracing::info!(
                    "lab: the process serving {} is gone; serving it here",
                    dir.root().display()
                );
                *served.lock().await = Some(s);
                return;
            }
            Ok(None) => {}
            Err(e) => tracing::warn!("lab: cannot serve {}: {e}", dir.root().display()),
        }
    }
}

/// Point the contexts of `kubeconfig` that name a lab cluster at that cluster's API server, when
/// they point elsewhere (an earlier run's port, another state directory's lab).
fn repoint_kubeconfig(
    kubeconfig: &std::path::Path,
    topo: &core::Topology,
    endpoints: &std::collections::BTreeMap<String, String>,
) -> Result<()> {
    let Some(kc) = apiserver::kubeconfig::read_kubeconfig(kubeconfig) else {
        return Ok(());
    };
    let server_of = |context: &str| -> Option<String> {
        let ctx = kc["contexts"]
            .as_array()?
            .iter()
            .find(|x| x["name"].as_str() == Some(context))?;
        let cluster = ctx["context"]["cluster"].as_str()?;
        kc["clusters"]
            .as_array()?
            .iter()
            .find(|x| x["name"].as_str() == Some(cluster))?["cluster"]["server"]
            .as_str()
            .map(String::from)
    };
    let mut stale = false;
    let entries: Vec<(String, String, String)> = topo
        .clusters
        .iter()
        .filter(|c| {
            kc["contexts"].as_array().is_some_and(|a| {
                a.iter()
                    .any(|x| x["name"].as_str() == Some(c.context.as_str()))
            })
        })
        .filter_map(|c| {
            let url = endpoints.get(&c.name)?;
            if server_of(&c.context).as_deref() != Some(url.as_str()) {
                stale = true;
            }
            Some((c.context.clone(), c.name.clone(), url.clone()))
        })
        .collect();
    if stale {
        apiserver::kubeconfig::write_kubeconfig(kubeconfig, &entries, None)?;
    }
    Ok(())
}

/// A lab that lives elsewhere is still `<state dir>/lab` for what names it so (the lab plan's
/// `git.checkout: "{{ state_dir }}/lab/gitops"`, the online lint): a symbolic link to it. A real
/// directory there (a private lab from before) is left alone.
fn link_state_dir(cfg: &LabConfig, dir: &core::LabDir) -> Result<()> {
    let link = core::LabDir::for_state_dir(&cfg.state_dir).0;
    let canon = |p: &std::path::Path| std::fs::canonicalize(p).unwrap_or_else(|_| p.to_path_buf());
    if cfg.lab_dir.is_none() || canon(&link) == canon(dir.root()) {
        return Ok(());
    }
    match std::fs::symlink_metadata(&link) {
        Ok(m) if !m.file_type().is_symlink() => {
            tracing::warn!(
                "lab: {} is a lab of its own; the shared lab is {}",
                link.display(),
                dir.root().display()
            );
            return Ok(());
        }
        _ => {}
    }
    std::fs::create_dir_all(&cfg.state_dir)?;
    let tmp = cfg
        .state_dir
        .join(format!(".lab.{}.link", std::process::id()));
    let _ = std::fs::remove_file(&tmp);
    std::os::unix::fs::symlink(canon(dir.root()), &tmp)?;
    std::fs::rename(&tmp, &link)?;
    Ok(())
}

/// Links named after each tool, pointing at this binary (the stand-ins are multi-call). Each is
/// replaced by a rename, so a step of another process sharing the lab never finds it missing.
fn link_tools(dir: &core::LabDir, exe: &std::path::Path) -> Result<()> {
    std::fs::create_dir_all(dir.bin())?;
    for t in tools::TOOLS {
        let link = dir.bin().join(t);
        if std::fs::read_link(&link).is_ok_and(|p| p == exe) {
            continue;
        }
        let tmp = dir.bin().join(format!(".{t}.{}", std::process::id()));
        let _ = std::fs::remove_file(&tmp);
        std::os::unix::fs::symlink(exe, &tmp)?;
        std::fs::rename(&tmp, &link)?;
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
    /// `{cluster: URL}` of the lab's API servers (served here or by another process).
    pub fn endpoints(&self) -> &std::collections::BTreeMap<String, String> {
        &self.endpoints
    }
    /// The pid of the process that served the lab when this one attached to it; None when this
    /// process served it from the start.
    pub fn served_by(&self) -> Option<u32> {
        self.served_by
    }
    /// Stop serving (when this process serves): the controllers, then the API servers, flushed.
    /// Another process sharing the lab then serves it.
    pub async fn shutdown(self) {
        if let Some(t) = &self.takeover {
            t.abort();
        }
        let served = self.served.lock().await.take();
        if let Some(served) = served {
            for s in &served.sims {
                s.abort();
            }
            for (_, s) in served.servers {
                s.shutdown().await;
            }
        }
    }
}
