//! radiantctl: bootstrap and operate a Radiant cluster.

mod client;
mod cmd;
mod error;
mod output;

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::Parser;
use clap::Subcommand;

use crate::error::CtlError;
use crate::output::Output;

/// Bootstrap and operate a Radiant cluster.
#[derive(Parser, Debug)]
#[command(name = "radiantctl", version, about)]
struct Cli {
    /// Any radiant of the cluster (host:port).
    #[arg(long, short, global = true, env = "RADIANT_ENDPOINT", default_value = "127.0.0.1:7400")]
    endpoint: String,
    /// Output format.
    #[arg(long, short, global = true, value_enum, default_value = "table")]
    output: Output,
    /// How long to wait for nodes and elections, in seconds.
    #[arg(long, global = true, default_value_t = 60)]
    wait: u64,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Turn the given radiants into the station and elect a bondsmith.
    Bootstrap {
        /// Station hosts, comma separated: 1, 3 or 5 of them.
        #[arg(long, value_name = "A,B,C")]
        station: String,
        /// Number of shards, fixed for the life of the cluster.
        #[arg(long, default_value_t = 64)]
        shards: u32,
        /// Replicas per order.
        #[arg(long, default_value_t = 3)]
        replicas: u32,
        /// Largest key the cluster accepts, in bytes.
        #[arg(long, default_value_t = 4096)]
        max_key_bytes: u32,
        /// Largest value the cluster accepts, in bytes (at most 3 MiB).
        #[arg(long, default_value_t = 1024 * 1024)]
        max_value_bytes: u32,
    },
    /// Tell satellites to phone home to the station.
    Join {
        /// Station members (any of them reaches the bondsmith), comma separated.
        #[arg(long, value_name = "A[,B,C]")]
        bondsmith: String,
        /// Hosts to join.
        #[arg(required = true, value_name = "HOST")]
        hosts: Vec<String>,
    },
    /// Show the cluster: bondsmith, station and nodes.
    Status,
    /// List the nodes of the cluster.
    Nodes,
    /// List the orders: members, herald, shard count.
    Orders,
    /// Show which order serves each shard.
    Shards,
    /// Write a key; exits 0 once the write is acknowledged.
    Put {
        /// Key.
        key: String,
        /// Value.
        value: String,
    },
    /// Read a key (linearizable unless --stale).
    Get {
        /// Key.
        key: String,
        /// Read from any replica; may return an old value.
        #[arg(long)]
        stale: bool,
    },
    /// Delete a key.
    Del {
        /// Key.
        key: String,
    },
    /// List keys with a prefix, in key order.
    Scan {
        /// Prefix (default: every key).
        #[arg(default_value = "")]
        prefix: String,
        /// At most this many keys.
        #[arg(long, default_value_t = 100)]
        limit: u32,
        /// Read from any replica; may return old values.
        #[arg(long)]
        stale: bool,
    },
    /// Load the cluster and report throughput and latency percentiles.
    Bench {
        /// Concurrent clients.
        #[arg(long, default_value_t = 16)]
        clients: usize,
        /// Measured seconds.
        #[arg(long, default_value_t = 10)]
        seconds: u64,
        /// Operation mix.
        #[arg(long, value_enum, default_value = "put")]
        op: cmd::bench::BenchOp,
        /// Value size in bytes.
        #[arg(long, default_value_t = 256)]
        value_size: usize,
        /// Number of distinct keys.
        #[arg(long, default_value_t = 10_000)]
        keys: u64,
    },
    /// List the cluster settings with their values, defaults and meanings.
    Settings,
    /// Change a cluster setting (journaled); an unknown name or a bad value exits 5.
    Set {
        /// Setting name (see `radiantctl settings`).
        name: String,
        /// New value.
        value: String,
    },
    /// Drain a node: it gives up every leadership it holds and leads nothing until undrained.
    Drain {
        /// The node: its name, id or address.
        node: String,
        /// Return once the bondsmith has the request, without waiting for it to be done.
        #[arg(long)]
        no_wait: bool,
    },
    /// End a drain: the node may lead again.
    Undrain {
        /// The node: its name, id or address.
        node: String,
    },
    /// Remove a node: drain it, give each of its places to a spare, stop its services. Refused
    /// (exit 5) with the reason if that could not finish.
    Remove {
        /// The node: its name, id or address.
        node: String,
        /// Return once the bondsmith has the request, without waiting for it to be done.
        #[arg(long)]
        no_wait: bool,
    },
    /// Move shards, with their data, until order shard counts differ by at most one (the
    /// placement that moves the fewest bytes). Shows the plan, then the progress.
    Rebalance {
        /// Print the plan (each move's shard, orders, keys, bytes, ETA) and change nothing.
        #[arg(long, conflicts_with = "cancel")]
        dry_run: bool,
        /// Cancel the queued moves and those not switched yet (switched ones finish).
        #[arg(long)]
        cancel: bool,
        /// Return once the bondsmith has queued the moves, without following them.
        #[arg(long)]
        no_wait: bool,
    },
    /// Show the shard moves under way (phase, bytes done of total) and those queued.
    Moves,
    /// Double the shard count without moving data between orders (shard s of S becomes s and
    /// s+S of 2S, both on s's order).
    Fracture {
        /// Return once the bondsmith has the request.
        #[arg(long)]
        no_wait: bool,
    },
    /// Halve the shard count: siblings s and s+S/2 are first moved onto one order, then merged.
    Consolidate {
        /// Return once the bondsmith has the request.
        #[arg(long)]
        no_wait: bool,
    },
    /// Show the journal of recovery actions.
    Events {
        /// Show at most this many recent entries (0: all).
        #[arg(long, default_value_t = 50)]
        limit: u32,
        /// Print the chain of entries that explains one subject's present state.
        #[arg(long, requires = "subject")]
        explain: bool,
        /// With --explain: a node (name, id or address).
        #[arg(long, group = "subject", requires = "explain")]
        node: Option<String>,
        /// With --explain: an order (0 is the station).
        #[arg(long, group = "subject", requires = "explain")]
        order: Option<u64>,
        /// With --explain: a shard.
        #[arg(long, group = "subject", requires = "explain")]
        shard: Option<u32>,
    },
    /// Run a local cluster on loopback.
    #[command(args_conflicts_with_subcommands = true)]
    Demo {
        #[command(subcommand)]
        action: Option<DemoAction>,
        /// Number of radiants.
        #[arg(long, default_value_t = 6)]
        nodes: usize,
        /// How many of them form the station (1, 3 or 5).
        #[arg(long, default_value_t = 3)]
        station: usize,
        /// Directory for data, configs and logs (default: a temporary one).
        #[arg(long)]
        dir: Option<PathBuf>,
        /// Leave the cluster running and exit.
        #[arg(long)]
        detach: bool,
    },
}

#[derive(Subcommand, Debug)]
enum DemoAction {
    /// Stop a demo started with --detach.
    Down {
        /// The demo's directory.
        #[arg(long)]
        dir: PathBuf,
    },
}

async fn run(cli: Cli) -> Result<(), CtlError> {
    let wait = Duration::from_secs(cli.wait);
    let endpoint = client::check_addr(&cli.endpoint)?;
    match cli.command {
        Command::Bootstrap { station, shards, replicas, max_key_bytes, max_value_bytes } => {
            let args = cmd::bootstrap::BootstrapArgs {
                station: client::addr_list(&station)?,
                shards,
                replicas,
                max_key_bytes,
                max_value_bytes,
                wait,
            };
            let b = cmd::bootstrap::run(&args).await?;
            cmd::bootstrap::print(&b, cli.output);
        }
        Command::Join { bondsmith, hosts } => {
            let args = cmd::join::JoinArgs {
                bondsmith: client::addr_list(&bondsmith)?,
                hosts: hosts.iter().map(|h| client::check_addr(h)).collect::<Result<_, _>>()?,
                wait,
            };
            let rows = cmd::join::run(&args).await?;
            cmd::join::print(&rows, cli.output);
        }
        Command::Status => cmd::show::status(&endpoint, cli.output).await?,
        Command::Nodes => cmd::show::nodes(&endpoint, cli.output).await?,
        Command::Bench { clients, seconds, op, value_size, keys } => {
            let args = cmd::bench::BenchArgs { clients, seconds, op, value_size, keys };
            cmd::bench::run(&endpoint, cli.output, &args).await?
        }
        Command::Orders => cmd::show::orders(&endpoint, cli.output).await?,
        Command::Shards => cmd::show::shards(&endpoint, cli.output).await?,
        Command::Put { key, value } => cmd::kv::put(&endpoint, cli.output, &key, &value).await?,
        Command::Get { key, stale } => cmd::kv::get(&endpoint, cli.output, &key, stale).await?,
        Command::Del { key } => cmd::kv::del(&endpoint, cli.output, &key).await?,
        Command::Scan { prefix, limit, stale } => cmd::kv::scan(&endpoint, cli.output, &prefix, limit, stale).await?,
        Command::Settings => cmd::settings::list(&endpoint, cli.output).await?,
        Command::Drain { node, no_wait } => {
            let wait = (!no_wait).then_some(wait);
            cmd::intent::run(&endpoint, cli.output, &node, cmd::intent::Ask::Drain, wait).await?
        }
        Command::Undrain { node } => {
            cmd::intent::run(&endpoint, cli.output, &node, cmd::intent::Ask::Undrain, Some(wait)).await?
        }
        Command::Remove { node, no_wait } => {
            let wait = (!no_wait).then_some(wait);
            cmd::intent::run(&endpoint, cli.output, &node, cmd::intent::Ask::Remove, wait).await?
        }
        Command::Rebalance { dry_run, cancel, no_wait } => {
            // Moving data takes longer than an election: follow for at least an hour.
            let wait = (!no_wait).then_some(wait.max(Duration::from_secs(3600)));
            cmd::rebalance::rebalance(&endpoint, cli.output, dry_run, cancel, wait).await?
        }
        Command::Moves => cmd::rebalance::moves(&endpoint, cli.output).await?,
        Command::Fracture { no_wait } | Command::Consolidate { no_wait } => {
            let double = matches!(cli.command, Command::Fracture { .. });
            let wait = (!no_wait).then_some(wait.max(Duration::from_secs(3600)));
            cmd::rebalance::reshard(&endpoint, cli.output, double, wait).await?
        }
        Command::Set { name, value } => cmd::settings::set(&endpoint, cli.output, wait, &name, &value).await?,
        Command::Events { limit, explain, node, order, shard } => {
            let explain = explain.then_some(cmd::show::Explain { node, order, shard });
            cmd::show::events(&endpoint, cli.output, limit, explain).await?
        }
        Command::Demo { action: Some(DemoAction::Down { dir }), .. } => cmd::demo::down(&dir)?,
        Command::Demo { action: None, nodes, station, dir, detach } => {
            let args = cmd::demo::DemoArgs { nodes, station, dir, detach };
            cmd::demo::run(&args, cli.output).await?;
        }
    }
    Ok(())
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let runtime = match tokio::runtime::Builder::new_multi_thread().enable_all().build() {
        Ok(r) => r,
        Err(e) => {
            eprintln!("radiantctl: cannot start the runtime: {e}");
            return ExitCode::from(error::code::FAILURE);
        }
    };
    match runtime.block_on(run(cli)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("radiantctl: {e}");
            e.exit_code()
        }
    }
}
