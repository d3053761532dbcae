//! The `trainer` binary: resolves the flags into a plan, runs it, turns any error into one
//! line and an exit code.

use std::process::ExitCode;

use clap::CommandFactory;
use trainer::cli::{Cli, ResolveError, resolve};
use trainer::commands::{one_line, run};

fn main() -> ExitCode {
    // burn materialises loaded optimizer state on its default device, which is the GPU when
    // wgpu is built in: that would open a GPU the user did not ask for (and fail lazily on a
    // machine without one). The CPU is always there; the state moves to the training device
    // at the next step. BURN_DEVICE is burn's own switch for this default.
    if std::env::var_os("BURN_DEVICE").is_none() {
        // SAFETY: the first statement of main, before any thread exists.
        unsafe { std::env::set_var("BURN_DEVICE", "flex") };
    }
    // A panic is a bug, never an answer to bad input; still, report it in one line.
    std::panic::set_hook(Box::new(|info| {
        eprintln!("error: internal error (please report): {info}");
    }));
    // For the run's record of its starts (a name that is not UTF-8 is kept lossily).
    let argv: Vec<String> = std::env::args_os()
        .map(|a| a.to_string_lossy().into_owned())
        .collect();
    let matches = Cli::command().get_matches();
    let invocation = match resolve(&matches, &argv) {
        Ok(invocation) => invocation,
        Err(ResolveError::Clap(e)) => e.exit(),
        Err(e @ ResolveError::SweepFlags(_)) => {
            eprintln!("error: {e}");
            return ExitCode::from(2);
        }
    };
    match run(invocation) {
        Ok(out) => {
            use std::io::Write;
            // A reader that stopped early (`| head`) is no error of ours; the output's end is
            // its choice, so the exit code stays 0.
            match writeln!(std::io::stdout(), "{out}") {
                Err(e) if e.kind() != std::io::ErrorKind::BrokenPipe => {
                    eprintln!("error: writing the result to stdout: {e}");
                    ExitCode::FAILURE
                }
                _ => ExitCode::SUCCESS,
            }
        }
        Err(e) => {
            let code = e.exit_code();
            eprintln!("error: {}", one_line(anyhow::Error::from(e).as_ref()));
            ExitCode::from(code)
        }
    }
}
