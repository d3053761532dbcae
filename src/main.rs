//! The `trainer` binary: parses flags, runs, turns any error into one line and exit code 1.

use std::process::ExitCode;

use clap::Parser;
use trainer::cli::{Cli, run};

fn main() -> ExitCode {
    // A panic is a bug, never an answer to bad input; still, report it in one line.
    std::panic::set_hook(Box::new(|info| {
        eprintln!("error: internal error (please report): {info}");
    }));
    let cli = Cli::parse();
    match run(&cli).map_err(anyhow::Error::from) {
        Ok(line) => {
            println!("{line}");
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}
