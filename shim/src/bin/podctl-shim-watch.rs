//! `podctl-shim-watch`: the long-lived half of a container's monitor (see
//! `podctl_shim::watch`). Executed by `podctl-shim create` once the
//! container exists; a separate binary so it maps as little as possible.
//! `podctl-shim-watch pause` is a pod's pause process once its namespaces
//! exist (see `podctl_shim::reaper`).

use std::process::ExitCode;

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    if args.first().map(String::as_str) == Some(podctl_shim::reaper::PAUSE_MODE) {
        podctl_shim::reaper::run();
    }
    match podctl_shim::watch::parse_args(&args).and_then(podctl_shim::watch::run) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("podctl-shim-watch: {e}");
            ExitCode::FAILURE
        }
    }
}
