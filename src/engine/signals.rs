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
