//! The signals a run handles (INT, TERM, HUP): blocked from the first instant of `run` and `resume`,
//! and delivered once the engine has handlers for them, so no signal ever kills a run before it
//! can record how it ended. Children start with an empty signal mask (the standard library resets
//! it in every child), so steps still get TERM and KILL.

use nix::sys::signal::{SigSet, SigmaskHow, Signal, pthread_sigmask};

fn handled() -> SigSet {
    let mut set = SigSet::empty();
    for s in [Signal::SIGINT, Signal::SIGTERM, Signal::SIGHUP] {
        set.add(s);
    }
    set
}

/// Block the handled signals on this thread (call first thing in `main`, before other threads
/// exist: they inherit the mask).
pub fn block() {
    let _ = pthread_sigmask(SigmaskHow::SIG_BLOCK, Some(&handled()), None);
}

/// Unblock them on this thread (the one that drives the run), once handlers are installed.
pub fn unblock() {
    let _ = pthread_sigmask(SigmaskHow::SIG_UNBLOCK, Some(&handled()), None);
}

/// A run's cancellation: `cancel` stops running work (level 1: TERM the process groups; 2: KILL);
/// `waits` stops read-only work (fired by a signal, and by the run when a step fails).
pub struct Signals {
    pub cancel: crate::exec::Cancel,
    pub waits: crate::exec::Cancel,
    pub waits_tx: tokio::sync::watch::Sender<u8>,
    first: std::sync::Arc<std::sync::atomic::AtomicI32>,
    task: tokio::task::JoinHandle<()>,
}

impl Signals {
    /// Handle INT, TERM and HUP: the first stops new work and interrupts running steps; the second
    /// kills at once. Then deliver what came while they were blocked.
    pub fn install() -> Signals {
        use std::sync::atomic::Ordering::SeqCst;
        use tokio::signal::unix::{SignalKind, signal};
        let (cancel_tx, cancel_rx) = tokio::sync::watch::channel(0u8);
        let (waits_tx, waits_rx) = tokio::sync::watch::channel(0u8);
        let first = std::sync::Arc::new(std::sync::atomic::AtomicI32::new(0));
        let streams = (
            signal(SignalKind::interrupt()),
            signal(SignalKind::terminate()),
            signal(SignalKind::hangup()),
        );
        // `main` blocked these signals before anything else ran; now that they have handlers,
        // deliver any that came meanwhile (a Ctrl-C at start-up is an interruption, not a kill).
        unblock();
        let (w, f) = (waits_tx.clone(), first.clone());
        let task = tokio::spawn(async move {
            let (Ok(mut int), Ok(mut term), Ok(mut hup)) = streams else {
                return;
            };
            let mut n = 0u8;
            loop {
                let (num, name) = tokio::select! {
                    _ = int.recv() => (2, "interrupt"),
                    _ = term.recv() => (15, "SIGTERM"),
                    _ = hup.recv() => (1, "SIGHUP"),
                };
                n = n.saturating_add(1);
                let _ = f.compare_exchange(0, num, SeqCst, SeqCst);
                let _ = w.send(n);
                let _ = cancel_tx.send(n);
                if n == 1 {
                    eprintln!("\n{name}: stopping running steps (again to kill at once)");
                }
            }
        });
        Signals {
            cancel: crate::exec::Cancel(cancel_rx),
            waits: crate::exec::Cancel(waits_rx),
            waits_tx,
            first,
            task,
        }
    }

    /// The exit code for an interrupted run: 143 (TERM), 129 (HUP) or 130 (INT).
    pub fn exit(&self) -> crate::error::Exit {
        match self.first.load(std::sync::atomic::Ordering::SeqCst) {
            15 => crate::error::Exit::Terminated,
            1 => crate::error::Exit::Hangup,
            _ => crate::error::Exit::Interrupted,
        }
    }

    /// Read-only work stops now (a step failed).
    pub fn cancel_waits(&self) {
        let _ = self.waits_tx.send(1);
    }
}

impl Drop for Signals {
    fn drop(&mut self) {
        self.task.abort();
    }
}
