//! Shell pitfalls: a `shell:` written over several lines with `\` continuations, in a folded (`>`)
//! or plain YAML scalar. YAML joins the lines with spaces before the shell sees them, so each `\`
//! now escapes a space: the next word starts with a space, or a flag becomes an argument.

use std::sync::LazyLock;

use regex::Regex;

use super::Finding;
use super::context::{Ctx, roles, script_of};

const RULE: &str = "shell";

static ESCAPED_SPACE: LazyLock<Regex> =
    LazyLock::new(|| Regex::new(r"\\[ \t]+\S").expect("static regex"));

pub(super) fn findings(cx: &Ctx) -> Vec<Finding> {
    let mut out = Vec::new();
    for (i, u) in cx.units() {
        for (role, a) in roles(&cx.dag.work[i]) {
            let Some(script) = script_of(a) else { continue };
            if !ESCAPED_SPACE.is_match(script) || script.contains("\\\n") {
                continue;
            }
            // The source wrote a continuation at a line's end: YAML folded it.
            let Some(text) = cx.text_of(&u.file) else {
                continue;
            };
            let key = format!("{}:", role.field());
            let (from, _) = cx.locate(u, &[&key]);
            let lines: Vec<&str> = text.lines().collect();
            let Some((n, l)) = lines
                .iter()
                .enumerate()
                .skip(from.saturating_sub(1) as usize)
                .take(40)
                .find(|(_, l)| l.trim_end().ends_with('\\') && !l.trim_start().starts_with('#'))
            else {
                continue;
            };
            let col = l.trim_end().len() as u64;
            out.push(Finding::error(
                RULE,
                crate::error::UserError::new(format!(
                    "step {:?}: this `\\` continuation is folded by YAML into `\\ ` (an escaped space), so the shell sees one line with broken words",
                    u.step
                ))
                .in_file(&u.file)
                .at(n as u64 + 1, col)
                .field(format!("steps.{}.{}", u.step, role.field()))
                .help("write the script as a literal block (shell: |), which keeps the newlines, or as cmd: [argv…]")
                .with_source_line(),
            ));
        }
    }
    out
}
