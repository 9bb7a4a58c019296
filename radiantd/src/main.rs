//! `radiantd --config FILE`: parse arguments, load the config, run the node.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::Parser;
use radiantd::config::Config;

/// mimalloc instead of glibc's malloc: a put allocates and frees many small buffers on several
/// threads (gRPC frames, encodes, log records), and glibc's arenas spent 10-13 % of the CPU of
/// a loaded node in malloc, free and their consolidation (bench/RESULTS.md, the write path).
/// Built without transparent huge pages (`no_thp`): with them an idle node's resident memory
/// went from 39 to 72 MB.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// Exit codes, documented in the README.
mod exit {
    /// A runtime failure after a successful start.
    pub const FAILURE: u8 = 1;
    /// Bad arguments or configuration.
    pub const CONFIG: u8 = 2;
    /// The environment refuses: the port is taken or the data dir is in use.
    pub const ENVIRONMENT: u8 = 3;
}

/// The Radiant daemon: transport and a supervisor. Everything else comes from the station.
#[derive(Parser, Debug)]
#[command(name = "radiantd", version, about)]
struct Args {
    /// Path of the TOML config file.
    #[arg(long, short, env = "RADIANTD_CONFIG", default_value = "/etc/radiant/radiantd.toml")]
    config: PathBuf,
    /// Only validate the config file and exit (0 if valid, 2 if not).
    #[arg(long)]
    check_config: bool,
    /// Log format.
    #[arg(long, value_parser = ["text", "json"], default_value = "text")]
    log_format: String,
}

fn main() -> ExitCode {
    let args = Args::parse();
    let config = match Config::load(&args.config) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("radiantd: {e}");
            return ExitCode::from(exit::CONFIG);
        }
    };
    if args.check_config {
        println!("{}: ok", args.config.display());
        return ExitCode::SUCCESS;
    }
    init_tracing(&args.log_format);
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(r) => r,
        Err(e) => {
            eprintln!("radiantd: cannot start the runtime: {e}");
            return ExitCode::from(exit::FAILURE);
        }
    };
    runtime.block_on(async move {
        let listener = match tokio::net::TcpListener::bind(config.listen).await {
            Ok(l) => l,
            Err(e) => {
                eprintln!("radiantd: cannot listen on {}: {e}", config.listen);
                return ExitCode::from(exit::ENVIRONMENT);
            }
        };
        match radiantd::run(config, listener, shutdown_signal()).await {
            Ok(()) => ExitCode::SUCCESS,
            Err(e @ radiantd::server::ServerError::DataDirInUse(_)) => {
                eprintln!("radiantd: {e}");
                ExitCode::from(exit::ENVIRONMENT)
            }
            Err(e) => {
                eprintln!("radiantd: {e}");
                ExitCode::from(exit::FAILURE)
            }
        }
    })
}

fn init_tracing(format: &str) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info,openraft=warn"));
    let builder = tracing_subscriber::fmt().with_env_filter(filter).with_writer(std::io::stderr);
    if format == "json" {
        builder.json().init();
    } else {
        builder.init();
    }
}

async fn shutdown_signal() {
    let ctrl_c = tokio::signal::ctrl_c();
    match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
        Ok(mut term) => {
            tokio::select! {
                _ = ctrl_c => {}
                _ = term.recv() => {}
            }
        }
        Err(_) => {
            let _ = ctrl_c.await;
        }
    }
}
