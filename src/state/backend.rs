//! Where a plan's state lives: the local state directory, or a namespace of a cluster (the plan's
//! `state:` and the pointer a migration leaves in the state directory, `backend.json`), and moving
//! it between the two.
//!
//! The pointer is what later runs, `status` and teammates' fresh state directories follow: once it
//! exists the state is in the cluster, whatever the current directory holds.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use serde::{Deserialize, Serialize};

use super::kube::{KubeStore, Lost};
use super::remote::{Acquired, Location};
use super::{FileStore, Holder, State, Store};
use crate::error::{Exit, ExitError, Result, UserError};
use crate::spec::Plan;
use crate::spec::plan::StateBackend;

/// Where the state is.
#[derive(Debug, Clone, PartialEq)]
pub enum Backend {
    Local,
    Kubernetes(Location),
}

/// `<state dir>/backend.json`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Pointer {
    pub backend: String,
    pub plan: String,
    pub since: String,
    #[serde(flatten)]
    pub location: Location,
}

pub fn pointer_path(state_dir: &Path) -> PathBuf {
    state_dir.join("backend.json")
}

/// The pointer a migration left, if any. A damaged one is an error naming the file.
pub fn pointer(state_dir: &Path) -> Result<Option<Pointer>> {
    let path = pointer_path(state_dir);
    let text = match std::fs::read(&path) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => {
            return Err(color_eyre::eyre::eyre!(
                "cannot read {}: {e}",
                path.display()
            ));
        }
    };
    serde_json::from_slice(&text).map(Some).map_err(|e| {
        UserError::new(format!("{} is not a state pointer: {e}", path.display()))
            .help("it is written by `bootstrap state migrate`; remove it to use the local state again")
            .into()
    })
}

fn write_pointer(state_dir: &Path, plan: &str, loc: &Location) -> Result<()> {
    let p = Pointer {
        backend: "kubernetes".into(),
        plan: plan.into(),
        since: super::now(),
        location: loc.clone(),
    };
    let path = pointer_path(state_dir);
    let tmp = path.with_extension("json.tmp");
    std::fs::write(&tmp, serde_json::to_vec_pretty(&p)?)?;
    std::fs::rename(&tmp, &path)?;
    Ok(())
}

/// The plan's kube location for its state, when `state.backend` is `kubernetes`.
pub fn location(plan: &Plan, state_dir: &Path) -> Option<Location> {
    let s = plan.state.as_ref()?;
    if s.backend != StateBackend::Kubernetes {
        return None;
    }
    let kubeconfig = match &s.kubeconfig {
        Some(k) => plan.resolve(k),
        None => {
            let ours = PathBuf::from(crate::render::plan_path(
                plan,
                &crate::dag::absolute_dir(state_dir),
                &plan.paths.kubeconfig.value,
            ));
            if ours.exists() {
                ours
            } else {
                default_kubeconfig()
            }
        }
    };
    Some(Location {
        kubeconfig,
        context: s
            .context
            .clone()
            .or_else(|| plan.clusters.first().map(|c| c.context.clone()))
            .unwrap_or_default(),
        namespace: s.namespace.clone(),
        lease_seconds: s.lease_seconds(),
    })
}

/// `$KUBECONFIG` (its first file) or `~/.kube/config`, as kubectl reads them.
fn default_kubeconfig() -> PathBuf {
    if let Some(k) = std::env::var_os("KUBECONFIG")
        && let Some(first) = std::env::split_paths(&k).next()
    {
        return first;
    }
    std::env::var_os("HOME")
        .map(PathBuf::from)
        .unwrap_or_default()
        .join(".kube/config")
}

/// Where the state is for this plan and state directory. With `after:` and nothing recorded
/// locally, the cluster is asked whether a teammate's state for this plan is already there (and
/// the pointer written when it is).
pub fn resolve(plan: Option<&Plan>, state_dir: &Path) -> Result<Backend> {
    if let Some(p) = pointer(state_dir)? {
        return Ok(Backend::Kubernetes(p.location));
    }
    let Some(plan) = plan else {
        return Ok(Backend::Local);
    };
    let Some(loc) = location(plan, state_dir) else {
        return Ok(Backend::Local);
    };
    let after = plan.state.as_ref().and_then(|s| s.after.as_ref());
    if after.is_none() {
        return Ok(Backend::Kubernetes(loc));
    }
    if !FileStore::new(state_dir).is_empty() || !loc.kubeconfig.exists() {
        return Ok(Backend::Local);
    }
    let found =
        KubeStore::open(&loc, state_dir, &plan.name.value, Lost::new()).and_then(|k| k.head());
    match found {
        Ok(Some((p, _))) if p == plan.name.value => {
            write_pointer(state_dir, &plan.name.value, &loc)?;
            eprintln!(
                "note: the state of plan {p} is in {loc}; using it (pointer written to {})",
                pointer_path(state_dir).display()
            );
            Ok(Backend::Kubernetes(loc))
        }
        Ok(_) => Ok(Backend::Local),
        Err(e) => {
            eprintln!(
                "warning: cannot ask {loc} whether this plan's state is already there ({e:#}); using the local state directory {}. If a teammate's run keeps it there, stop and fix the connection first: two local states would both believe they are the record.",
                state_dir.display()
            );
            Ok(Backend::Local)
        }
    }
}

/// Everything recorded, wherever it is (for `status`, `show`, `plan`…).
pub fn load(plan: Option<&Plan>, state_dir: &Path) -> Result<State> {
    match resolve(plan, state_dir)? {
        Backend::Local => FileStore::new(state_dir).load(),
        Backend::Kubernetes(loc) => {
            let name = plan.map(|p| p.name.value.clone()).unwrap_or_default();
            KubeStore::open(&loc, state_dir, &name, Lost::new())?.load()
        }
    }
}

/// The store a run writes to, with the lock taken (the Lease, for the cluster; the caller holds
/// the local directory's lock). Exits 3 naming the holder when someone else runs.
pub fn open_for_run(
    plan: &Plan,
    state_dir: &Path,
    me: &Holder,
    lost: &Arc<Lost>,
) -> Result<Box<dyn Store>> {
    match resolve(Some(plan), state_dir)? {
        Backend::Local => Ok(Box::new(FileStore::new(state_dir))),
        Backend::Kubernetes(loc) => {
            let pointed = pointer(state_dir)?.is_some();
            let mut k = KubeStore::open(&loc, state_dir, &plan.name.value, lost.clone())?;
            lock(&mut k, me)?;
            match k.head()? {
                None if pointed => {
                    return Err(UserError::new(format!(
                        "the state this directory points to is gone from {loc} (moved back to a machine with `bootstrap state migrate --to local`, or deleted)"
                    ))
                    .help(format!(
                        "to start over with an empty state there, remove {}; to continue from a teammate's copy, ask them to run `bootstrap state migrate --to kubernetes`",
                        pointer_path(state_dir).display()
                    ))
                    .into());
                }
                None => {
                    // A plan whose state is in the cluster from the start: create it there, with
                    // whatever this directory recorded before.
                    k.ensure_namespace()?;
                    let mut local = FileStore::new(state_dir);
                    k.rewrite(&local.load()?)?;
                    local.set_aside()?;
                }
                Some((p, _)) if p != plan.name.value => {
                    return Err(ExitError::new(
                        Exit::Usage,
                        format!(
                            "{loc} holds the state of plan {p:?}, not of {:?}",
                            plan.name.value
                        ),
                    )
                    .into());
                }
                Some(_) => {
                    k.send_spool()?;
                }
            }
            if pointer(state_dir)?.is_none() {
                write_pointer(state_dir, &plan.name.value, &loc)?;
            }
            Ok(Box::new(k))
        }
    }
}

/// Take the Lease; exit 3 naming the holder when it is held.
fn lock(k: &mut KubeStore, me: &Holder) -> Result<()> {
    k.ensure_namespace()?;
    match k.lock(me)? {
        Acquired::Taken { took_over } => {
            if let Some((h, why)) = took_over {
                eprintln!("note: took over the lock in {} from {h}: {why}", k.loc);
            }
            Ok(())
        }
        Acquired::Held(h) => Err(ExitError::new(
            Exit::Locked,
            format!(
                "the state in {} is locked by {h}; wait for that run (its lease lasts {} s after its last renewal)",
                k.loc, k.loc.lease_seconds
            ),
        )
        .into()),
    }
}

/// Move the local state into the cluster: refused when the cluster already holds state (another
/// plan's, or this plan's from someone else) unless `force`. Returns the store, holding the lock.
pub fn migrate_to_kubernetes(
    plan: &Plan,
    state_dir: &Path,
    loc: &Location,
    force: bool,
    me: &Holder,
    lost: &Arc<Lost>,
) -> Result<KubeStore> {
    let mut k = KubeStore::open(loc, state_dir, &plan.name.value, lost.clone())?;
    lock(&mut k, me)?;
    if let Some((p, _)) = k.head()?
        && !force
    {
        let whose = if p == plan.name.value {
            format!("already holds state of plan {p:?}")
        } else {
            format!("holds the state of another plan, {p:?}")
        };
        return Err(UserError::new(format!("{loc} {whose}"))
            .help("to use it as it is, remove this state directory's journal and run again (it is found there); to replace it with this directory's state, add --force")
            .into());
    }
    let mut local = FileStore::new(state_dir);
    let state = local.load()?;
    k.rewrite(&state)?;
    write_pointer(state_dir, &plan.name.value, loc)?;
    local.set_aside()?;
    Ok(k)
}

/// Bring the state back from the cluster into the state directory, and delete it there.
pub fn migrate_to_local(
    plan_name: &str,
    state_dir: &Path,
    force: bool,
    me: &Holder,
) -> Result<usize> {
    let Some(p) = pointer(state_dir)? else {
        return Err(UserError::new(format!(
            "the state of {} is already local",
            state_dir.display()
        ))
        .into());
    };
    let mut local = FileStore::new(state_dir);
    if !local.is_empty() && !force {
        return Err(UserError::new(format!(
            "{} already holds a journal",
            local.path().display()
        ))
        .help("add --force to replace it with the state from the cluster")
        .into());
    }
    let mut k = KubeStore::open(&p.location, state_dir, plan_name, Lost::new())?;
    lock(&mut k, me)?;
    let state = k.load()?;
    local.replace_with(&state)?;
    std::fs::remove_file(pointer_path(state_dir))?;
    k.delete_all()?;
    let _ = std::fs::remove_file(state_dir.join("spool.jsonl"));
    Ok(state.steps.len())
}
