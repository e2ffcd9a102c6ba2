//! Where steps run: the environment the engine starts before a run and stops after it.
//!
//! The engine knows only this interface: extra environment variables for every step (a `PATH` with
//! tool stand-ins first, a lab directory, …) and a start and a stop. The real world needs nothing;
//! the lab is one implementation, chosen and wired by the command line, so the engine never knows
//! its test double.

use futures_util::future::BoxFuture;

use crate::error::Result;

/// Something steps run in.
pub trait Environment: Send {
    /// Bring it up; returns the variables every step gets (before its own `env`).
    fn start(&mut self) -> BoxFuture<'_, Result<Vec<(String, String)>>>;
    /// Bring it down (after the run, whatever its outcome).
    fn stop(&mut self) -> BoxFuture<'_, ()>;
}

/// The real world: nothing to start, nothing to add.
pub struct RealWorld;

impl Environment for RealWorld {
    fn start(&mut self) -> BoxFuture<'_, Result<Vec<(String, String)>>> {
        Box::pin(async { Ok(Vec::new()) })
    }
    fn stop(&mut self) -> BoxFuture<'_, ()> {
        Box::pin(async {})
    }
}

/// Chooses the environment for a loaded plan (the command line passes the lab's chooser).
pub type Chooser<'a> = &'a dyn Fn(&crate::workspace::Workspace) -> Box<dyn Environment>;

/// The chooser for a build without the lab: the real world, and a lab plan refused at start.
pub fn real_world(ws: &crate::workspace::Workspace) -> Box<dyn Environment> {
    if ws.spec.plan.lab {
        Box::new(NoLab)
    } else {
        Box::new(RealWorld)
    }
}

/// A `lab: true` plan in a build without the lab (`--no-default-features`).
struct NoLab;

impl Environment for NoLab {
    fn start(&mut self) -> BoxFuture<'_, Result<Vec<(String, String)>>> {
        Box::pin(async {
            Err(crate::error::UserError::new(
                "this plan is a lab plan (lab: true), and this bootstrap was built without the lab",
            )
            .field("lab")
            .help("build with the default features (`cargo build`), or use a plan with lab: false")
            .into())
        })
    }
    fn stop(&mut self) -> BoxFuture<'_, ()> {
        Box::pin(async {})
    }
}

/// Whether the state may be in a cluster (a pointer, or the plan's `state:` names one).
pub fn maybe_in_cluster(ws: &crate::workspace::Workspace) -> bool {
    crate::state::backend::pointer_path(&ws.state_dir).exists()
        || crate::state::backend::location(&ws.spec.plan, &ws.state_dir).is_some()
}

/// Run `f` with the plan's clusters reachable: for a lab plan whose state may be in a cluster, the
/// lab is brought up for the command's duration (served, or joined when another process serves
/// it), as real clusters are simply there.
pub fn with_clusters<T>(
    ws: &crate::workspace::Workspace,
    choose: Chooser,
    f: impl FnOnce() -> Result<T>,
) -> Result<T> {
    if !(ws.spec.plan.lab && maybe_in_cluster(ws)) {
        return f();
    }
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    rt.block_on(async {
        let mut env = choose(ws);
        env.start().await?;
        let out = tokio::task::block_in_place(f);
        env.stop().await;
        out
    })
}

/// Everything recorded for this workspace, wherever the state is (the lab's clusters brought up
/// when it may be in one).
pub fn recorded(ws: &crate::workspace::Workspace, choose: Chooser) -> Result<crate::state::State> {
    with_clusters(ws, choose, || {
        crate::state::backend::load(Some(&ws.spec.plan), &ws.state_dir)
    })
}
