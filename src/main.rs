//! The `natsfn` binary: a thin edge around natsfn-actors. Parses the command line,
//! connects to NATS, and runs a node or one administrative command.

mod admin;
mod aliases;
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
mod published;
mod stats;
mod versions;

use clap::Parser;

use crate::cli::{
    AliasCommand, Cli, Command, DlqCommand, NatsCommand, PackageCommand, VersionCommand,
};

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
    if let Some(n) = cli.replicas {
        natsfn_actors::buckets::set_replicas(n.into());
    }
    let nats = match connect::Nats::resolve(cli.nats) {
        Ok(nats) => nats,
        Err(e) => {
            eprintln!("natsfn: {e:#}");
            return std::process::ExitCode::FAILURE;
        }
    };
    let long_running = matches!(cli.command, Command::Node(_) | Command::Dev(_));
    let command = async {
        match cli.command {
            Command::Node(args) => node::run(&nats, args).await,
            Command::Dev(args) => dev::run(args).await,
            Command::Bind(args) => admin::bind(&nats, args).await,
            Command::Deploy(args) => admin::deploy(&nats, args).await,
            Command::Package { command } => match command {
                PackageCommand::Push { dir, package } => {
                    package::push_cmd(&nats, &dir, &package).await
                }
                PackageCommand::Ls => package::ls(&nats).await,
                PackageCommand::Rm { package, force } => package::rm(&nats, &package, force).await,
            },
            Command::Nats {
                command: NatsCommand::Bind(args),
            } => admin::edit_subjects(&nats, args, admin::Edit::Add).await,
            Command::Nats {
                command: NatsCommand::Unbind(args),
            } => admin::edit_subjects(&nats, args, admin::Edit::Remove).await,
            Command::Invoke(args) => invoke::run(&nats, args).await,
            Command::Ls => admin::ls(&nats).await,
            Command::Nodes => admin::nodes(&nats).await,
            Command::Get { name } => admin::get(&nats, &name).await,
            Command::Rm { name } => admin::rm(&nats, &name).await,
            Command::Stats { name } => stats::run(&nats, name).await,
            Command::Logs(args) => logs::run(&nats, args).await,
            Command::Dlq {
                command: DlqCommand::Ls { name },
            } => events::dlq_ls(&nats, &name).await,
            Command::Dlq {
                command: DlqCommand::Redrive { name },
            } => events::dlq_redrive(&nats, &name).await,
            Command::Publish(args) => versions::publish(&nats, args).await,
            Command::Version { command } => match command {
                VersionCommand::Ls { name } => versions::ls(&nats, &name).await,
                VersionCommand::Rm { name, version } => versions::rm(&nats, &name, version).await,
            },
            Command::Alias { command } => match command {
                AliasCommand::Set(args) => aliases::alias_set(&nats, args).await,
                AliasCommand::Ls { name } => aliases::alias_ls(&nats, &name).await,
                AliasCommand::Rm { name, alias } => aliases::alias_rm(&nats, &name, &alias).await,
            },
        }
    };
    // A command the server refused a request cannot do its work, and would otherwise
    // wait for a reply that never comes; a node reports its own.
    let result = if long_running {
        command.await
    } else {
        tokio::select! {
            result = command => result,
            text = nats.refused() => Err(refusal(&text)),
        }
    };
    match result {
        Ok(code) => code,
        Err(e) => {
            eprintln!("natsfn: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}

fn refusal(text: &str) -> anyhow::Error {
    let hint = if text.contains("Subscription to \"_INBOX") {
        ": give the --inbox-prefix (or the context's inbox_prefix) your permissions allow"
    } else {
        ": the user's permissions do not allow this command"
    };
    anyhow::anyhow!("NATS refused a request: {text}{hint}")
}

/// Nodes log at info; one-shot commands only say what went wrong.
fn init_tracing(long_running: bool) {
    let default = if long_running {
        "info,async_nats=warn,ractor=warn"
    } else {
        // A command says itself why it could not connect.
        "warn,async_nats=off"
    };
    let filter = tracing_subscriber::EnvFilter::try_from_env("NATSFN_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(default));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .init();
}
