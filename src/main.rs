use std::process::ExitCode;
use std::sync::atomic::AtomicBool;
use std::sync::Arc;

use clap::Parser;
use kdeck::cli::{Cli, Command};
use kdeck::engine::pipeline::Pipeline;
use kdeck::{config, demo, engine, headless, lag, logging, metrics, security, tools, tui, watch};

fn main() -> ExitCode {
    return_large_buffers_to_the_system();
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(e) => return usage_error(e),
    };
    match run(cli) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("kdeck: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn run(cli: Cli) -> anyhow::Result<ExitCode> {
    let done = match cli.command {
        Command::Run(args) => {
            let cfg = config::resolve(&args)?;
            let (_guard, log) = logging::init(cfg.log_file.as_deref())?;
            eprintln!("kdeck: logging to {}", log.display());
            let pipeline = Pipeline::new(&cfg.pipeline).map_err(anyhow::Error::msg)?;
            let mut engine_cfg = cfg.engine;
            engine_cfg.exactly_once = pipeline.exactly_once();
            let strategies = tui::strategies(engine_cfg.exactly_once.is_some());
            let endpoint = metrics::bind_option(args.output.metrics.as_deref())?;
            security::check_connection(&engine_cfg.brokers, &engine_cfg.properties, engine_cfg.connect_timeout).map_err(anyhow::Error::msg)?;
            let engine = engine::start(engine_cfg, pipeline.factory())?;
            on_signals_shut_down(engine.shutdown_flag())?;
            metrics::serve_engine(endpoint, &engine)?;
            if args.output.headless || !tui::available() {
                headless::run(engine, args.output.json, None)
            } else {
                tui::run(engine, cfg.keymap, strategies)
            }
        }
        Command::Audit(args) => tools::audit(&args),
        Command::Dlq(args) => tools::dlq(&args),
        // Its own exit status by verdict, errors included.
        Command::Lag(args) => return Ok(lag::run(&args)),
        Command::Watch(args) => {
            let (_guard, log) = logging::init(args.log_file.as_deref())?;
            eprintln!("kdeck: logging to {}", log.display());
            let stop = Arc::new(AtomicBool::new(false));
            on_signals_shut_down(stop.clone())?;
            watch::run(&args, stop)
        }
        Command::Demo(args) => {
            let (_guard, log) = logging::init(args.output.log_file.as_deref())?;
            eprintln!("kdeck: logging to {}", log.display());
            demo::run(&args, on_signals_shut_down)
        }
    };
    done.map(|()| ExitCode::SUCCESS)
}

/// clap's usage errors exit 2, which `kdeck lag` gives to an error verdict:
/// for `lag` a bad command line is "unknown" (3) instead.
fn usage_error(e: clap::Error) -> ExitCode {
    let _ = e.print();
    match e.kind() {
        clap::error::ErrorKind::DisplayHelp | clap::error::ErrorKind::DisplayVersion => ExitCode::SUCCESS,
        _ if std::env::args().nth(1).as_deref() == Some("lag") => ExitCode::from(3),
        _ => ExitCode::from(2),
    }
}

/// Record buffers are allocated on one thread (librdkafka's, the poll thread)
/// and freed on another (a worker). glibc raises its mmap threshold as large
/// blocks are freed, after which 1 MB records come from per-thread arenas that
/// fragment and never shrink: 900 KB records peaked at 165–280 MiB against 72
/// MiB with the threshold fixed (tests/memory_budget.rs). Fixing it keeps blocks
/// of 128 KiB and more mmapped, so freeing one returns it to the system.
fn return_large_buffers_to_the_system() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: mallopt only changes allocator tuning; called before any other thread exists.
    unsafe {
        libc::mallopt(libc::M_MMAP_THRESHOLD, 128 * 1024);
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
