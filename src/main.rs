//! The `trainer` binary: parses flags, runs, turns any error into one line and an exit code.

use std::process::ExitCode;

use clap::parser::ValueSource;
use clap::{CommandFactory, FromArgMatches};
use trainer::cli::{Cli, run};

fn main() -> ExitCode {
    // A panic is a bug, never an answer to bad input; still, report it in one line.
    std::panic::set_hook(Box::new(|info| {
        eprintln!("error: internal error (please report): {info}");
    }));
    let matches = Cli::command().get_matches();
    let cli = match Cli::from_arg_matches(&matches) {
        Ok(cli) => cli,
        Err(e) => e.exit(),
    };
    // Whether --epochs was typed (a resumed run keeps its own otherwise).
    let sub = matches.subcommand_matches("train").unwrap_or(&matches);
    let epochs_given = sub.value_source("epochs") == Some(ValueSource::CommandLine);
    match run(cli, epochs_given) {
        Ok(out) => {
            println!("{out}");
            ExitCode::SUCCESS
        }
        Err(e) => {
            let code = e.exit_code();
            eprintln!("error: {:#}", anyhow::Error::from(e));
            ExitCode::from(code)
        }
    }
}
