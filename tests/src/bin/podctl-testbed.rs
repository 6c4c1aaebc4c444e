//! `podctl-testbed`: serve critest's images offline.
//!
//! Starts the registry fixture (Debian's `docker-registry` on a free
//! 127.0.0.1 port), publishes the images of
//! `podctl_tests::critest_images` under their upstream repository paths,
//! writes the `[registry.hosts."…"]` tables of a podctl daemon
//! configuration to CONFIG (every upstream host mirrored to the local
//! registry only), prints the registry address (`127.0.0.1:PORT`) on
//! stdout once everything is published, and runs until SIGTERM or SIGINT,
//! then stops the registry.
//!
//! ```text
//! podctl-testbed [--registry-config PATH] CONFIG
//! ```
//!
//! `--registry-config PATH` also writes the same mirrors as a stand-alone
//! registry configuration (`[hosts."…"]`, for `podctl --registry-config`).

use std::path::PathBuf;
use std::process::ExitCode;

use podctl_tests::critest_images::{self, NOT_REPRODUCIBLE};
use podctl_tests::registry::Registry;
use podctl_tests::signals::{block_signals, wait_for_signal, write_atomically};

const USAGE: &str = "usage: podctl-testbed [--registry-config PATH] CONFIG";

struct Args {
    config: PathBuf,
    registry_config: Option<PathBuf>,
}

fn parse_args() -> Result<Args, String> {
    let mut config = None;
    let mut registry_config = None;
    let mut it = std::env::args_os().skip(1);
    while let Some(a) = it.next() {
        match a.to_str() {
            Some("-h" | "--help") => return Err(USAGE.into()),
            Some("--registry-config") => {
                let v = it
                    .next()
                    .ok_or_else(|| format!("--registry-config needs a path\n{USAGE}"))?;
                registry_config = Some(PathBuf::from(v));
            }
            Some(s) if s.starts_with('-') => return Err(format!("unknown option {s}\n{USAGE}")),
            _ if config.is_none() => config = Some(PathBuf::from(a)),
            _ => return Err(format!("one CONFIG path only\n{USAGE}")),
        }
    }
    Ok(Args {
        config: config.ok_or_else(|| USAGE.to_string())?,
        registry_config,
    })
}

fn run(args: &Args, signals: &libc::sigset_t) -> Result<(), String> {
    let reg = Registry::start().map_err(|e| format!("starting the registry: {e}"))?;
    let host = reg.host();
    eprintln!("podctl-testbed: registry at {host}, building and publishing images...");
    let published = critest_images::publish(&reg).map_err(|e| format!("publishing: {e}"))?;
    for p in &published {
        eprintln!("  {} -> {} ({})", p.reference, p.local, p.digest);
    }
    for (r, why) in NOT_REPRODUCIBLE {
        eprintln!("  not served: {r}: {why}");
    }
    write_atomically(&args.config, &critest_images::podctl_registry_toml(&host))?;
    if let Some(p) = &args.registry_config {
        write_atomically(p, &critest_images::registry_config_toml(&host))?;
    }
    println!("{host}");
    eprintln!(
        "podctl-testbed: ready; config in {}; SIGTERM or SIGINT stops",
        args.config.display()
    );
    let sig = wait_for_signal(signals);
    eprintln!("podctl-testbed: signal {sig}, stopping the registry");
    drop(reg);
    Ok(())
}

fn main() -> ExitCode {
    let signals = match block_signals() {
        Ok(s) => s,
        Err(e) => {
            eprintln!("podctl-testbed: {e}");
            return ExitCode::FAILURE;
        }
    };
    let args = match parse_args() {
        Ok(a) => a,
        Err(e) => {
            eprintln!("{e}");
            return ExitCode::from(2);
        }
    };
    match run(&args, &signals) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("podctl-testbed: {e}");
            ExitCode::FAILURE
        }
    }
}
