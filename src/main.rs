//! The `natsfn` binary: a thin edge around natsfn-actors. Parses the command line,
//! connects to NATS, and runs a node or one administrative command.

mod admin;
mod cli;
mod connect;
mod dev;
mod events;
mod gateway;
mod invoke;
mod logs;
mod metrics;
mod node;
mod package;
mod patience;
mod stats;

use clap::Parser;

use crate::cli::{Cli, Command, DlqCommand, NatsCommand, PackageCommand};

fn main() -> std::process::ExitCode {
    let cli = Cli::parse();
    let threads = match &cli.command {
        Command::Node(args) => args.threads,
        Command::Dev(args) => args.node.threads,
        _ => 1,
    };
    // One thread by default: every hop of an invocation (subscription, actors, worker
    // channel, reply) then wakes a task on the same thread instead of another parked
    // one, which costs a node a third of its CPU per invocation (see the benchmark).
    let runtime = if threads <= 1 {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
    } else {
        tokio::runtime::Builder::new_multi_thread()
            .worker_threads(threads)
            .enable_all()
            .build()
    };
    match runtime {
        Ok(runtime) => runtime.block_on(run(cli)),
        Err(e) => {
            eprintln!("natsfn: cannot start the async runtime: {e}");
            std::process::ExitCode::FAILURE
        }
    }
}

async fn run(cli: Cli) -> std::process::ExitCode {
    init_tracing(matches!(cli.command, Command::Node(_) | Command::Dev(_)));
    if let Some(path) = cli.creds.clone() {
        connect::set_creds(path);
    }
    if let Some(n) = cli.replicas {
        natsfn_actors::buckets::set_replicas(n.into());
    }
    let result = match cli.command {
        Command::Node(args) => node::run(&cli.nats, args).await,
        Command::Dev(args) => dev::run(args).await,
        Command::Bind(args) => admin::bind(&cli.nats, args).await,
        Command::Deploy(args) => admin::deploy(&cli.nats, args).await,
        Command::Package { command } => match command {
            PackageCommand::Push { dir, package } => {
                package::push_cmd(&cli.nats, &dir, &package).await
            }
            PackageCommand::Ls => package::ls(&cli.nats).await,
            PackageCommand::Rm { package, force } => package::rm(&cli.nats, &package, force).await,
        },
        Command::Nats {
            command: NatsCommand::Bind(args),
        } => admin::edit_subjects(&cli.nats, args, admin::Edit::Add).await,
        Command::Nats {
            command: NatsCommand::Unbind(args),
        } => admin::edit_subjects(&cli.nats, args, admin::Edit::Remove).await,
        Command::Invoke(args) => invoke::run(&cli.nats, args).await,
        Command::Ls => admin::ls(&cli.nats).await,
        Command::Nodes => admin::nodes(&cli.nats).await,
        Command::Get { name } => admin::get(&cli.nats, &name).await,
        Command::Rm { name } => admin::rm(&cli.nats, &name).await,
        Command::Stats { name } => stats::run(&cli.nats, name).await,
        Command::Logs(args) => logs::run(&cli.nats, args).await,
        Command::Dlq {
            command: DlqCommand::Ls { name },
        } => events::dlq_ls(&cli.nats, &name).await,
        Command::Dlq {
            command: DlqCommand::Redrive { name },
        } => events::dlq_redrive(&cli.nats, &name).await,
    };
    match result {
        Ok(code) => code,
        Err(e) => {
            eprintln!("natsfn: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}

/// Nodes log at info; one-shot commands only say what went wrong.
fn init_tracing(long_running: bool) {
    let default = if long_running {
        "info,async_nats=warn,ractor=warn"
    } else {
        "warn"
    };
    let filter = tracing_subscriber::EnvFilter::try_from_env("NATSFN_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(default));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .init();
}
