//! Where the project is: `-C/--chdir`, then, when the plan file is not found from the current
//! directory, the nearest ancestor that has it (as `cargo` finds `Cargo.toml` and `just` its
//! justfile). The default state directory then lives under that root.
//!
//! Owns resolving the starting directory. It never reads a plan.

use std::path::{Path, PathBuf};

use crate::cli::Global;
use crate::error::UserError;

/// The nearest directory from `start` upward that holds `plan` (a relative path).
pub fn find_root(start: &Path, plan: &Path) -> Option<PathBuf> {
    start
        .ancestors()
        .find(|d| d.join(plan).is_file())
        .map(Path::to_path_buf)
}

/// Apply `-C`, then find the project root when the plan is not where the paths say.
pub fn resolve(g: &mut Global) -> Result<(), UserError> {
    if let Some(dir) = &g.chdir {
        std::env::set_current_dir(dir).map_err(|e| {
            UserError::new(format!("cannot change to {}: {e}", dir.display())).field("-C")
        })?;
    }
    if g.plan.is_absolute() || g.plan.exists() {
        return Ok(());
    }
    let Ok(cwd) = std::env::current_dir() else {
        return Ok(());
    };
    if let Some(root) = find_root(&cwd, &g.plan) {
        tracing::debug!("project root: {}", root.display());
        g.plan = root.join(&g.plan);
        if g.phases.is_relative() && !g.phases.exists() {
            g.phases = root.join(&g.phases);
        }
        g.root = Some(root);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_the_nearest_ancestor_with_the_plan() {
        let t = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(t.path().join("plans")).unwrap();
        std::fs::create_dir_all(t.path().join("a/b")).unwrap();
        std::fs::write(t.path().join("plans/lab.yaml"), "").unwrap();
        assert_eq!(
            find_root(&t.path().join("a/b"), Path::new("plans/lab.yaml")).as_deref(),
            Some(t.path())
        );
        assert_eq!(
            find_root(&t.path().join("a/b"), Path::new("plans/none.yaml")),
            None
        );
    }
}
