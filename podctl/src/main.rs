//! `podctl`: one binary for the standalone front door, the CRI daemon and
//! the node agent.

mod cli;
mod docs;
#[cfg(test)]
mod fuzz_tests;
mod images_cmd;
mod info;
mod listing;
mod manifest;
mod node_cmd;
mod output;
mod pods;
mod restore;
mod revive;
mod run;
mod serve;
mod stream;
mod supervise;
mod supervisor_unit;

use clap::Parser;

fn main() -> std::process::ExitCode {
    let args = cli::Cli::parse();
    init_tracing(&args.log_level());
    unblock_stop_signals();
    let rt = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("podctl: cannot start the async runtime: {e}");
            return std::process::ExitCode::FAILURE;
        }
    };
    match rt.block_on(cli::run(args)) {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("podctl: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}

/// A parent may have left SIGTERM, SIGINT or SIGHUP blocked (the mask is
/// inherited across exec): the daemons' orderly stops need them.
fn unblock_stop_signals() {
    // SAFETY: sigset_t is plain data initialised by sigemptyset; the calls
    // only change this thread's mask before any other thread exists.
    unsafe {
        let mut set: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&mut set);
        for s in [libc::SIGTERM, libc::SIGINT, libc::SIGHUP] {
            libc::sigaddset(&mut set, s);
        }
        libc::pthread_sigmask(libc::SIG_UNBLOCK, &set, std::ptr::null_mut());
    }
}

/// Logs go to stderr: coloured on a terminal, plain text otherwise (the
/// supervisor's log file, the journal, a pipe).
fn init_tracing(level: &str) {
    use std::io::IsTerminal as _;
    let filter = tracing_subscriber::EnvFilter::try_from_env("PODCTL_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(level));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(std::io::stderr().is_terminal())
        .with_writer(std::io::stderr)
        .init();
}
