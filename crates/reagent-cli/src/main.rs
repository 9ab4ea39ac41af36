//! `reagent`: explain what a language model's output depends on.

mod args;
mod cmd;
mod render;

use std::process::ExitCode;

use clap::Parser;

fn main() -> ExitCode {
    let args = match args::Cli::try_parse() {
        Ok(a) => a,
        Err(e) => {
            use clap::error::ErrorKind;
            if matches!(e.kind(), ErrorKind::DisplayHelp | ErrorKind::DisplayVersion)
                || matches!(
                    e.kind(),
                    ErrorKind::DisplayHelpOnMissingArgumentOrSubcommand
                )
            {
                e.exit();
            }
            // One line: clap's message up to its usage block (a list of missing arguments
            // continues on the next lines), joined.
            let text = e.to_string();
            let mut line: Vec<&str> = text
                .lines()
                .map(str::trim)
                .take_while(|l| !l.is_empty() && !l.starts_with("Usage:"))
                .collect();
            if line.is_empty() {
                line.push("error: invalid arguments");
            }
            eprintln!("{} (see --help)", line.join(" "));
            return ExitCode::from(2);
        }
    };
    if let Some(n) = args.threads {
        // candle sizes its thread pools from this variable on first use.
        std::env::set_var("RAYON_NUM_THREADS", n.to_string());
    }
    if let Some(n) = args.batch_tokens {
        reagent::method::set_batch_tokens(n as usize);
    }
    let result = match args.command {
        args::Command::Predict(a) => cmd::predict::run(a),
        args::Command::Inspect(a) => cmd::inspect::run(a),
        args::Command::Attribute(a) => cmd::attribute::run(a),
        args::Command::Evaluate(a) => cmd::evaluate::run(a),
        args::Command::Summarize(a) => cmd::evaluate::summarize(a),
        args::Command::Report(a) => cmd::report::run(a),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}
