//! The tool stand-ins (talosctl, helm, cilium, hubble, flux, op, kubectl): the `bootstrap` binary
//! acts as each when invoked under its name (multi-call), with the real tool's flags, output, exit
//! codes and traps.

pub mod cilium;
pub mod cilium_mesh;
pub mod common;
pub mod flux;
pub mod helm;
pub mod hubble;
pub mod kubectl;
pub mod op;
pub mod talosctl;

use std::process::ExitCode;

/// The tools the lab stands in for (the core's `lint::tools::STAND_INS` names the same; a test
/// keeps the two equal).
pub const TOOLS: &[&str] = &[
    "talosctl", "helm", "cilium", "hubble", "flux", "op", "kubectl",
];

/// If argv[0] names a stand-in tool, run it and return its exit code.
pub fn dispatch_by_argv0() -> Option<ExitCode> {
    let mut args = std::env::args();
    let argv0 = args.next()?;
    let name = std::path::Path::new(&argv0)
        .file_name()?
        .to_str()?
        .to_string();
    if !TOOLS.contains(&name.as_str()) {
        return None;
    }
    let rest: Vec<String> = args.collect();
    let code = run_tool(&name, &rest);
    Some(ExitCode::from(code.clamp(0, 255) as u8))
}

/// Run one stand-in with its arguments (argv without the tool name); returns the exit code. Every
/// finished call is appended to the lab's call log (`calls.jsonl`), so rehearsals and the crash
/// harness can count what really happened (an irreversible action that succeeded twice, say).
pub fn run_tool(name: &str, args: &[String]) -> i32 {
    let code = run_tool_inner(name, args);
    if let Ok((dir, _)) = common::lab() {
        let line = serde_json::json!({"tool": name, "args": args, "exit": code, "pid": std::process::id()});
        let mut text = line.to_string();
        text.push('\n');
        // One write with O_APPEND: concurrent stand-ins never interleave within a line.
        if let Ok(mut f) = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(dir.root().join("calls.jsonl"))
        {
            let _ = std::io::Write::write_all(&mut f, text.as_bytes());
        }
    }
    code
}

fn run_tool_inner(name: &str, args: &[String]) -> i32 {
    match name {
        "talosctl" => talosctl::main(args),
        "helm" => helm::main(args),
        "cilium" => cilium::main(args),
        "hubble" => hubble::main(args),
        "flux" => flux::main(args),
        "op" => op::main(args),
        "kubectl" => kubectl::main(args),
        _ => 127,
    }
}
