//! The one confirmation of a run, asked before anything runs: every `confirm: true` step the run
//! would run, each with its rendered command, then a single yes/no (Terraform's "Do you want to
//! perform these actions?").
//!
//! Owns the wording and the prompt. It never decides which steps need it (the dispatcher does).

use std::fmt::Write;

use serde::Serialize;

/// One step that needs confirmation.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct Item {
    pub id: String,
    pub description: String,
    /// The rendered action, as `plan` shows it.
    pub command: String,
}

/// The list shown above the question.
pub fn render(items: &[Item]) -> String {
    let mut o = String::new();
    let _ = writeln!(
        o,
        "{} step{} of this run change real systems and need confirmation:\n",
        items.len(),
        if items.len() == 1 { "" } else { "s" }
    );
    for i in items {
        let _ = writeln!(o, "  • {}: {}", i.id, i.description);
        for l in i.command.lines() {
            let _ = writeln!(o, "      {l}");
        }
    }
    o
}

/// Ask once on the terminal (stderr); `false` when declined or when there is no terminal.
pub fn ask(items: &[Item]) -> bool {
    if items.is_empty() {
        return true;
    }
    eprintln!("{}", render(items));
    dialoguer::Confirm::new()
        .with_prompt("Do you want to run these steps?")
        .default(false)
        .interact()
        .unwrap_or(false)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lists_every_step_with_its_command() {
        let r = render(&[
            Item {
                id: "talos-apply/infra/infra-01".into(),
                description: "Apply the machine config".into(),
                command: "talosctl apply-config --insecure -n 10.0.0.1".into(),
            },
            Item {
                id: "talos-bootstrap/infra".into(),
                description: "Bootstrap etcd".into(),
                command: "talosctl bootstrap".into(),
            },
        ]);
        assert!(r.starts_with("2 steps of this run"), "{r}");
        assert!(r.contains(
            "talos-apply/infra/infra-01: Apply the machine config\n      talosctl apply-config"
        ));
        assert!(r.contains("talos-bootstrap/infra"));
    }
}
