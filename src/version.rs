//! What this build is: the crate version, the git commit it was built from and the build date
//! (`build.rs` provides both; `unknown` when built without git).

/// `0.1.0 (3f2a9c1d0e4b 2026-11-30)`.
pub const LONG: &str = concat!(
    env!("CARGO_PKG_VERSION"),
    " (",
    env!("BOOTSTRAP_GIT_SHA"),
    " ",
    env!("BOOTSTRAP_BUILD_DATE"),
    ")"
);

/// The commit, or `unknown`.
pub const GIT_SHA: &str = env!("BOOTSTRAP_GIT_SHA");
