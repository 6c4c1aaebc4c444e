//! `podctl-shim-watch`: the long-lived processes of a pod, as a separate
//! binary without libcontainer so they map as little as possible.
//! `podctl-shim-watch monitor` is the pod's monitor (see
//! `podctl_shim::podmon`), started by `podctl-shim create`.
//! `podctl-shim-watch pause` is a pod's pause process once its namespaces
//! exist (see `podctl_shim::reaper`).

use std::process::ExitCode;

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    if args.first().map(String::as_str) == Some(podctl_shim::reaper::PAUSE_MODE) {
        podctl_shim::reaper::run();
    }
    let rest = match args.split_first() {
        Some((mode, rest)) if mode == podctl_shim::podmon::MODE => rest,
        _ => {
            eprintln!("podctl-shim-watch: usage: podctl-shim-watch monitor|pause ...");
            return ExitCode::FAILURE;
        }
    };
    match podctl_shim::podmon::parse_args(rest).and_then(podctl_shim::podmon::run) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("podctl-shim-watch: {e}");
            ExitCode::FAILURE
        }
    }
}
