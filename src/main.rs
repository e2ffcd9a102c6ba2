//! The `bootstrap` binary: parse the command line, call one function per command, map errors to exit
//! codes. When invoked under a tool's name (talosctl, helm, cilium, hubble, flux, op, kubectl) it is the
//! lab's stand-in for that tool.

use std::process::ExitCode;

use clap::{CommandFactory, FromArgMatches};

use bootstrap::cli::{Cli, Command};
use bootstrap::error::{Exit, ExitError, UserError, UserErrors, exit_code_of};

// The lab is wired here, as the environment of lab plans; the engine never knows it.
#[cfg(not(feature = "lab"))]
use bootstrap::engine::environment::real_world as environment_for;
#[cfg(feature = "lab")]
use bootstrap::lab::{environment_for, lab_command};

/// `bootstrap lab …` in a build without the lab.
#[cfg(not(feature = "lab"))]
fn lab_command(
    _: &bootstrap::cli::Global,
    _: &bootstrap::cli::LabCommand,
) -> bootstrap::error::Result<Exit> {
    Err(UserError::new("this bootstrap was built without the lab")
        .help("build with the default features: cargo build")
        .into())
}

fn main() -> ExitCode {
    #[cfg(feature = "lab")]
    if let Some(code) = bootstrap_lab::tools::dispatch_by_argv0() {
        return code;
    }
    // `COMPLETE=bash bootstrap` prints the shell's registration; the shell then calls back here.
    clap_complete::CompleteEnv::with_factory(bootstrap::completion::command).complete();
    // `CI=false` (or 0, or empty) is not CI: make it so for everything below, which only asks
    // whether CI is set. Nothing else runs yet, so changing the environment is safe here.
    if std::env::var_os("CI").is_some() && !bootstrap::color::is_ci() {
        // SAFETY: single-threaded at this point (no runtime, no other threads started yet).
        unsafe { std::env::remove_var("CI") };
    }
    let args: Vec<std::ffi::OsString> = std::env::args_os().collect();
    let parsed = Cli::command()
        .color(bootstrap::color::clap_choice(&args))
        .try_get_matches_from(&args)
        .and_then(|m| Cli::from_arg_matches(&m));
    let mut cli = match parsed {
        Ok(cli) => cli,
        Err(e) => {
            let e = e.with_cmd(&Cli::command().color(bootstrap::color::clap_choice(&args)));
            let _ = e.print();
            return ExitCode::from(match e.kind() {
                clap::error::ErrorKind::DisplayHelp | clap::error::ErrorKind::DisplayVersion => 0,
                _ => Exit::Usage as u8,
            });
        }
    };
    let _ = color_eyre::config::HookBuilder::default()
        .display_env_section(false)
        .install();
    let decision = bootstrap::color::init(&cli.global);
    let g = &cli.global;
    // Diagnostics (-v, -vv) go to stderr; with -v the engine reports in plain lines, not bars, so the
    // two never interleave.
    let level = match (g.quiet, g.verbose) {
        (true, _) => tracing::Level::ERROR,
        (false, 0) => tracing::Level::WARN,
        (false, 1) => tracing::Level::INFO,
        (false, _) => tracing::Level::DEBUG,
    };
    // The kube client logs every failed request at ERROR; the state backend says what failed in
    // its own words, so the client's lines show only at -vv.
    let kube_level = if g.verbose >= 2 {
        tracing::level_filters::LevelFilter::from_level(level)
    } else {
        tracing::level_filters::LevelFilter::OFF
    };
    let targets = tracing_subscriber::filter::Targets::new()
        .with_default(level)
        .with_target("kube_client", kube_level);
    use tracing_subscriber::Layer as _;
    use tracing_subscriber::layer::SubscriberExt as _;
    use tracing_subscriber::util::SubscriberInitExt as _;
    let _ = tracing_subscriber::registry()
        .with(
            tracing_subscriber::fmt::layer()
                .with_writer(std::io::stderr)
                .with_target(false)
                .with_ansi(decision.stderr)
                .with_filter(targets),
        )
        .try_init();
    if let Err(e) = bootstrap::project::resolve(&mut cli.global) {
        eprintln!("error: {e}");
        return ExitCode::from(Exit::Usage as u8);
    }
    let g = &cli.global;
    // A run handles INT, TERM and HUP itself; until its handlers exist, they wait (blocked).
    if matches!(cli.command, Command::Run(_) | Command::Resume(_)) {
        bootstrap::engine::signals::block();
    }
    // A reader that closes the pipe early (`status --format json | head -c 10`) ends a read-only
    // command quietly, as Unix tools do, instead of a panic on EPIPE. Runs keep ignoring SIGPIPE:
    // a closed terminal must not kill a run before it records how it ended.
    if !matches!(
        cli.command,
        Command::Run(_) | Command::Resume(_) | Command::Lab(_)
    ) {
        // SAFETY: restoring a signal's default disposition at start-up, before any thread runs.
        let _ = unsafe {
            nix::sys::signal::signal(
                nix::sys::signal::Signal::SIGPIPE,
                nix::sys::signal::SigHandler::SigDfl,
            )
        };
    }
    let result = match cli.command {
        // The lab is wired here, as the environment of lab plans; the engine never knows it.
        Command::Plan(args) => bootstrap::commands::plan_command(g, &args, &environment_for),
        Command::Graph(args) => bootstrap::commands::graph_command(g, &args),
        Command::Lint(args) => bootstrap::lint::lint_command(g, &args),
        Command::Run(args) => bootstrap::commands::run_command(g, &args, &environment_for),
        Command::Resume(args) => bootstrap::commands::resume_command(g, &args, &environment_for),
        Command::Status(args) => bootstrap::commands::status_command(g, &args, &environment_for),
        Command::Reset(args) => bootstrap::commands::reset_command(g, &args, &environment_for),
        Command::Unlock(args) => bootstrap::commands::unlock_command(g, &args),
        Command::Logs(args) => bootstrap::inspect::logs_command(g, &args, &environment_for),
        Command::Show(args) => bootstrap::inspect::show_command(g, &args, &environment_for),
        Command::Man => bootstrap::inspect::man_command(),
        Command::State(cmd) => bootstrap::commands::state_command(g, &cmd, &environment_for),
        Command::Lab(cmd) => {
            let result = lab_command(g, &cmd);
            if matches!(cmd, bootstrap::cli::LabCommand::Reset)
                && matches!(result, Ok(Exit::Ok))
                && !g.quiet
            {
                eprintln!(
                    "The recorded outcomes are kept: the next run skips what they say is done. `bootstrap run --refresh` asks those steps' checks again; `bootstrap reset --all` forgets them."
                );
            }
            result
        }
    };
    match result {
        Ok(code) => ExitCode::from(code as u8),
        Err(err) => {
            let code = exit_code_of(&err);
            if let Some(e) = err.downcast_ref::<UserError>() {
                eprintln!("error: {e}");
            } else if let Some(e) = err.downcast_ref::<UserErrors>() {
                eprintln!("{e}");
            } else if let Some(e) = err.downcast_ref::<ExitError>() {
                eprintln!("error: {e}");
            } else {
                eprintln!("error: {err:#}");
            }
            ExitCode::from(code as u8)
        }
    }
}
