//! From clap's arguments to the plan, once: which flags were written, the recipe they
//! describe (defaults filled in for the network asked for), the device asked for, the model
//! file a `--model` names, a sweep's flags after `--` (logging flags among them applied as
//! before `--`). After ripgrep's low-level and high-level arguments: clap's structs are the
//! low level, [`crate::plan`] the high one.

use std::collections::BTreeSet;
use std::path::PathBuf;

use clap::{Args, CommandFactory, FromArgMatches, Parser};

use super::{Cli, Command, DataArgs, DeviceArgs, GridArgs, LogArgs, SweepArgs, TrainArgs};
use crate::backend::DeviceChoice;
use crate::data::DataRequest;
use crate::plan::{
    EvaluatePlan, ExportPlan, Invocation, Plan, PredictPlan, RunStart, ServePlan, SweepPlan,
    TrainPlan,
};
use crate::recipe::TrainConfig;
use crate::run::{RUNS_DIR, RunDir};
use crate::sweep::SWEEPS_DIR;
use crate::training::Feed;

/// Training flags after `trainer sweep ... --` that cannot be used: one line, clap's or ours.
#[derive(Debug, thiserror::Error)]
#[error("trainer sweep: {0}")]
pub struct SweepFlagsError(String);

/// Why a command line makes no plan.
#[derive(Debug, thiserror::Error)]
pub enum ResolveError {
    /// clap's own error (usage, `--help`, `--version`): clap prints it and picks the exit code.
    #[error(transparent)]
    Clap(#[from] clap::Error),
    /// A sweep's flags after `--` are wrong (exit code 2, as for any flag).
    #[error(transparent)]
    SweepFlags(#[from] SweepFlagsError),
}

/// Resolves the parsed command line `matches` (of `argv`) into what to do.
pub fn resolve(matches: &clap::ArgMatches, argv: &[String]) -> Result<Invocation, ResolveError> {
    check_flag_placement(matches)?;
    let cli = Cli::from_arg_matches(matches)?;
    // The command's own flags: the subcommand's, or the top level's for `trainer [FLAGS]`.
    let own = matches.subcommand().map_or(matches, |(_, sub)| sub);
    let mut log = cli.log.clone();
    let plan = match cli.command {
        None => train_plan(&cli.train, given_flags(own), own, argv),
        Some(Command::Train(args)) => train_plan(&args, given_flags(own), own, argv),
        Some(Command::Evaluate(args)) => Plan::Evaluate(EvaluatePlan {
            model: RunDir::model_file(&args.model, args.best),
            data: data_request(&args.data),
            device: choice(&args.device, own),
            test_limit: args.test_limit,
            test_size: args.test_size,
            json: args.json,
            predictions: args.predictions,
        }),
        Some(Command::Predict(args)) => Plan::Predict(PredictPlan {
            model: RunDir::model_file(&args.model, args.best),
            images: args.images,
            device: choice(&args.device, own),
            top: usize::from(args.top),
            json: args.json,
        }),
        Some(Command::Plot(args)) => Plan::Plot(args.run),
        Some(Command::Export(args)) => Plan::Export(ExportPlan {
            model: RunDir::model_file(&args.model, args.best),
            out: args.out,
        }),
        Some(Command::Serve(args)) => Plan::Serve(ServePlan {
            roots: match args.runs.is_empty() {
                true => [RUNS_DIR, SWEEPS_DIR].map(PathBuf::from).to_vec(),
                false => args.runs,
            },
            addr: std::net::SocketAddr::new(args.host, args.port),
            token: args.token,
        }),
        Some(Command::Sweep(args)) => {
            let (plan, after) = sweep_plan(args, &cli.log, argv)?;
            if let Some(after) = after {
                log = after;
            }
            plan
        }
    };
    Ok(Invocation {
        log: log.options(),
        plan,
    })
}

/// The data the flags name, and how to read it.
fn data_request(args: &DataArgs) -> DataRequest {
    DataRequest {
        path: args.data.clone(),
        format: args.data_format,
        image_size: args.image_size,
        channels: args.channels,
        skip_bad: args.skip_bad,
    }
}

/// The device the flags ask for; `matches` are the command's, to tell `--device` from
/// `$TRAINER_WGPU_DEVICE`.
fn choice(args: &DeviceArgs, matches: &clap::ArgMatches) -> DeviceChoice {
    DeviceChoice {
        backend: args.backend,
        api: args.wgpu_api,
        index: args.device,
        index_from_env: matches.try_contains_id("device").unwrap_or(false)
            && matches.value_source("device") == Some(clap::parser::ValueSource::EnvVariable),
    }
}

/// The plan of `trainer train` (or of the flags after a sweep's `--`): `given` are the
/// training flags written on the command line.
fn train_plan(
    args: &TrainArgs,
    given: BTreeSet<String>,
    matches: &clap::ArgMatches,
    argv: &[String],
) -> Plan {
    if args.list_devices {
        return Plan::ListDevices(args.device.wgpu_api);
    }
    Plan::Train(TrainPlan {
        start: match &args.resume {
            Some(dir) => RunStart::Resume(dir.clone()),
            None => RunStart::New(args.out.clone()),
        },
        recipe: recipe(args, &given),
        given,
        init_from: args.init_from.clone(),
        device: choice(&args.device, matches),
        data: data_request(&args.data),
        expected_data: None,
        feed: Feed {
            prefetch: args.prefetch,
            gather: args.gather,
            step: args.step,
        },
        keep: args.keep,
        args: argv.to_vec(),
    })
}

/// The recipe the training flags describe: what was written, and for the rest the defaults
/// of the network asked for.
fn recipe(args: &TrainArgs, given: &BTreeSet<String>) -> TrainConfig {
    TrainConfig {
        model: args.model,
        hidden: args.hidden.clone(),
        // Replaced by the network's defaults below unless given.
        epochs: args.epochs.unwrap_or_default() as usize,
        batch_size: args.batch_size as usize,
        lr: args.lr,
        schedule: args.lr_schedule.unwrap_or_default(),
        augment: args.augment.unwrap_or_default() as usize,
        weight_decay: args.weight_decay,
        dropout: args.dropout,
        label_smoothing: args.label_smoothing,
        seed: args.seed,
        valid_size: args.valid_size.unwrap_or(TrainConfig::default().valid_size),
        test_size: args.test_size,
        train_limit: args.train_limit,
        test_limit: args.test_limit,
        patience: args.patience.map(|p| p as usize),
        // Whole, so that the recorded file is found from anywhere and a repeated flag
        // matches the record (a resumed sweep point repeats it).
        init_from: args
            .init_from
            .as_deref()
            .map(|p| std::path::absolute(p).unwrap_or_else(|_| p.to_path_buf())),
    }
    .for_network(args.model, &args.hidden, given)
}

/// The training flags written in `matches` (not defaults), as written: `--lr`.
fn given_flags(matches: &clap::ArgMatches) -> BTreeSet<String> {
    let training = TrainArgs::augment_args(clap::Command::new("train"));
    training
        .get_arguments()
        .filter(|arg| {
            let id = arg.get_id().as_str();
            matches.try_contains_id(id).unwrap_or(false)
                && matches.value_source(id) == Some(clap::parser::ValueSource::CommandLine)
        })
        .filter_map(|arg| arg.get_long().map(|l| format!("--{l}")))
        .collect()
}

/// Refuses training flags written before a subcommand (`trainer --epochs 3 plot DIR`): they
/// would be silently ignored. Logging flags (`-v`, `-q`, `--log-*`) may go anywhere.
fn check_flag_placement(matches: &clap::ArgMatches) -> Result<(), clap::Error> {
    let Some((sub, _)) = matches.subcommand() else {
        return Ok(());
    };
    if let Some(flag) = given_flags(matches).into_iter().next() {
        return Err(Cli::command().error(
            clap::error::ErrorKind::ArgumentConflict,
            format!(
                "{flag} before the subcommand would be ignored: write `trainer {sub} {flag} ...`"
            ),
        ));
    }
    Ok(())
}

/// The plan of `trainer sweep`, and the logging flags after `--` applied over `log` if any
/// were given there.
fn sweep_plan(
    args: SweepArgs,
    log: &LogArgs,
    argv: &[String],
) -> Result<(Plan, Option<LogArgs>), SweepFlagsError> {
    let (common, after) = sweep_common(&args.common, log, argv)?;
    let plan = SweepPlan {
        out: args.out,
        points: args.grid.points(),
        shard: args.shard,
        report: args.report,
        stale_after: args.stale_after,
        max_failures: args.max_failures as usize,
        common,
        common_args: args.common,
    };
    Ok((Plan::Sweep(plan), after))
}

/// The training plan of the flags after a sweep's `--`, and the logging flags among them
/// applied over `log` (a flag there replaces the one before `--`, `-v` adds up), if any.
fn sweep_common(
    flags: &[String],
    log: &LogArgs,
    argv: &[String],
) -> Result<(TrainPlan, Option<LogArgs>), SweepFlagsError> {
    #[derive(Parser)]
    #[command(name = "trainer sweep ... --")]
    struct Common {
        #[command(flatten)]
        train: TrainArgs,
        #[command(flatten)]
        log: LogArgs,
    }
    let words = std::iter::once("trainer").chain(flags.iter().map(String::as_str));
    let first_line = |e: clap::Error| {
        let text = e.to_string();
        let line = text.lines().next().unwrap_or_default();
        SweepFlagsError(line.trim_start_matches("error: ").to_string())
    };
    let matches = Common::command()
        .try_get_matches_from(words)
        .map_err(first_line)?;
    let given = given_flags(&matches);
    // The grid's own flags, and the run directory the sweep gives each point.
    let grid = GridArgs::augment_args(clap::Command::new("grid"));
    let owned: Vec<String> = grid
        .get_arguments()
        .filter_map(|arg| arg.get_long())
        .chain(["out", "resume"])
        .map(|l| format!("--{l}"))
        .collect();
    if let Some(flag) = given.iter().find(|g| owned.contains(g)) {
        return Err(SweepFlagsError(format!(
            "{flag} is set by the sweep: give it before `--` (a list for the grid), or not at all"
        )));
    }
    let common = Common::from_arg_matches(&matches).map_err(first_line)?;
    let Plan::Train(plan) = train_plan(&common.train, given, &matches, argv) else {
        return Err(SweepFlagsError(
            "--list-devices is not a training flag for a sweep".into(),
        ));
    };
    let given_here =
        |id: &str| matches.value_source(id) == Some(clap::parser::ValueSource::CommandLine);
    let logging = LogArgs::augment_args(clap::Command::new("log"));
    let any_log = logging
        .get_arguments()
        .any(|arg| given_here(arg.get_id().as_str()));
    let after = any_log.then(|| LogArgs {
        log_format: if given_here("log_format") {
            common.log.log_format
        } else {
            log.log_format
        },
        log_file: common.log.log_file.clone().or_else(|| log.log_file.clone()),
        verbose: log.verbose.saturating_add(common.log.verbose),
        quiet: log.quiet || common.log.quiet,
    });
    Ok((plan, after))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::Architecture;
    use crate::recipe::flag_of;

    fn plan(args: &[&str]) -> Result<TrainPlan, ResolveError> {
        let argv: Vec<String> = args.iter().map(|a| a.to_string()).collect();
        let matches = Cli::command().try_get_matches_from(&argv)?;
        match resolve(&matches, &argv)?.plan {
            Plan::Train(plan) => Ok(plan),
            other => panic!("not a training plan: {other:?}"),
        }
    }

    /// The flags' defaults are the recipe's defaults (`TrainConfig::defaults`), for each model.
    #[test]
    fn flag_defaults_are_the_recipe_defaults() {
        for (args, model) in [
            (&["trainer"][..], Architecture::Mlp),
            (&["trainer", "--model", "cnn"][..], Architecture::Cnn),
        ] {
            assert_eq!(plan(args).unwrap().recipe, TrainConfig::defaults(model));
        }
    }

    /// Every recipe field has a flag named after it, and a recipe flag that changes its field
    /// is named when it contradicts a recorded recipe (a resumed run): found through serde,
    /// field by field, so a new field is covered here without a new line. `--epochs` extends
    /// a run rather than contradicting it.
    #[test]
    fn a_changed_recipe_field_is_refused_by_its_flag() {
        let recorded = TrainConfig::default();
        let serde_json::Value::Object(fields) = serde_json::to_value(&recorded).unwrap() else {
            panic!("a recipe serialises as an object");
        };
        let training = TrainArgs::augment_args(clap::Command::new("train"));
        assert!(fields.len() >= 16, "{fields:?}");
        for field in fields.keys() {
            let flag = flag_of(field);
            let arg = training
                .get_arguments()
                .find(|a| a.get_long().map(|l| format!("--{l}")).as_deref() == Some(&flag))
                .unwrap_or_else(|| panic!("the recipe field {field} has no flag {flag}"));
            let values: Vec<String> = arg
                .get_possible_values()
                .iter()
                .map(|v| v.get_name().to_string())
                .chain(["3", "0.5", "7,7", "/tmp/w.safetensors"].map(String::from))
                .collect();
            let refusal = values.iter().find_map(|value| {
                let asked = plan(&["trainer", &flag, value]).ok()?;
                assert!(asked.gave(&flag));
                if field == "epochs" {
                    assert_ne!(asked.recipe.epochs, recorded.epochs);
                    assert_eq!(recorded.contradiction(&asked.recipe, &asked.given), None);
                    return Some(flag.clone());
                }
                recorded
                    .contradiction(&asked.recipe, &asked.given)
                    .map(|d| d.flag)
            });
            assert_eq!(refusal.as_deref(), Some(flag.as_str()), "{field}");
        }
    }

    /// A flag the sweep sets itself is refused after `--`, naming it; logging flags after `--`
    /// replace those before it.
    #[test]
    fn a_sweeps_flags_after_the_separator_are_resolved() {
        let sweep = |args: &[&str]| {
            let argv: Vec<String> = ["trainer", "sweep", "--out", "s"]
                .iter()
                .chain(args)
                .map(|a| a.to_string())
                .collect();
            let matches = Cli::command().try_get_matches_from(&argv).unwrap();
            resolve(&matches, &argv)
        };
        let err = sweep(&["--", "--lr", "0.1"]).unwrap_err().to_string();
        assert!(err.contains("--lr is set by the sweep"), "{err}");
        let invocation = sweep(&["-v", "--", "--log-format", "json", "-v", "--dropout", "0.2"]);
        let invocation = invocation.unwrap();
        assert_eq!(invocation.log.format, crate::logging::LogFormat::Json);
        assert_eq!(invocation.log.verbose, 2);
        let Plan::Sweep(plan) = invocation.plan else {
            panic!("not a sweep")
        };
        assert_eq!(plan.common.recipe.dropout, 0.2);
        assert!(plan.common.gave("--dropout"));
    }

    /// A run directory given as `--model` is resolved to its final model (its best with
    /// `--best`).
    #[test]
    fn a_run_directory_names_its_model() {
        let dir = tempfile::tempdir().unwrap();
        let run = dir.path().to_str().unwrap();
        let argv: Vec<String> = [
            "trainer", "export", "--best", "--model", run, "--out", "m.onnx",
        ]
        .map(String::from)
        .to_vec();
        let matches = Cli::command().try_get_matches_from(&argv).unwrap();
        let Plan::Export(plan) = resolve(&matches, &argv).unwrap().plan else {
            panic!("not an export");
        };
        assert_eq!(plan.model, std::path::Path::new(run).join("best.model"));
    }
}
