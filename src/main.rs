use std::process::ExitCode;
use std::sync::atomic::AtomicBool;
use std::sync::Arc;

use clap::Parser;
use kdeck::cli::{Cli, Command};
use kdeck::engine::pipeline::Pipeline;
use kdeck::{config, demo, engine, headless, logging, tools, tui};

fn main() -> ExitCode {
    let cli = Cli::parse();
    match run(cli) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("kdeck: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn run(cli: Cli) -> anyhow::Result<()> {
    match cli.command {
        Command::Run(args) => {
            let cfg = config::resolve(&args)?;
            let (_guard, log) = logging::init(cfg.log_file.as_deref())?;
            eprintln!("kdeck: logging to {}", log.display());
            let pipeline = Pipeline::new(&cfg.pipeline).map_err(anyhow::Error::msg)?;
            let mut engine_cfg = cfg.engine;
            engine_cfg.exactly_once = pipeline.exactly_once();
            let strategies = tui::strategies(engine_cfg.exactly_once.is_some());
            let engine = engine::start(engine_cfg, pipeline.factory())?;
            on_signals_shut_down(engine.shutdown_flag())?;
            if args.output.headless || !tui::available() {
                headless::run(engine, args.output.json, None)
            } else {
                tui::run(engine, cfg.keymap, strategies)
            }
        }
        Command::Audit(args) => tools::audit(&args),
        Command::Dlq(args) => tools::dlq(&args),
        Command::Demo(args) => {
            let (_guard, log) = logging::init(args.output.log_file.as_deref())?;
            eprintln!("kdeck: logging to {}", log.display());
            demo::run(&args, on_signals_shut_down)
        }
    }
}

/// SIGINT/SIGTERM ask for a graceful shutdown; a second one exits at once.
fn on_signals_shut_down(flag: Arc<AtomicBool>) -> anyhow::Result<()> {
    use signal_hook::consts::{SIGINT, SIGTERM};
    for sig in [SIGINT, SIGTERM] {
        signal_hook::flag::register_conditional_shutdown(sig, 130, flag.clone())?;
        signal_hook::flag::register(sig, flag.clone())?;
    }
    Ok(())
}
