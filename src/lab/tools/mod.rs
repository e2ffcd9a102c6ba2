//! The tool stand-ins (talosctl, helm, cilium, hubble, flux, op, kubectl): the `bootstrap` binary
//! acts as each when invoked under its name.

use std::process::ExitCode;

/// If argv[0] names a stand-in tool, run it and return its exit code.
pub fn dispatch_by_argv0() -> Option<ExitCode> {
    let argv0 = std::env::args_os().next()?;
    let name = std::path::Path::new(&argv0)
        .file_name()?
        .to_str()?
        .to_string();
    match name.as_str() {
        "talosctl" | "helm" | "cilium" | "hubble" | "flux" | "op" | "kubectl" => {
            eprintln!("{name}: the lab stand-in is not implemented yet");
            Some(ExitCode::from(1))
        }
        _ => None,
    }
}
