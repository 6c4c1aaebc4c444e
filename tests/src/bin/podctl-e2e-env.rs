//! `podctl-e2e-env`: a one-node cluster for Kubernetes' e2e suite.
//!
//! ```text
//! podctl-e2e-env --bin DIR --work DIR --agent podctl|kubelet|kubelet-containerd
//!                [--podctl PATH] [--cluster-dns IP] ENV_FILE
//! ```
//!
//! Builds and serves the e2e images, starts etcd, kube-apiserver,
//! kube-controller-manager and kube-scheduler on loopback and the chosen
//! node agent (see `podctl_tests::e2e_env`), waits for the node to be
//! Ready, writes `KUBECONFIG=`, `KUBE_TEST_REPO_LIST=`,
//! `DOCKER_CONFIG_FILE=` and `NODE_NAME=` lines to ENV_FILE, prints
//! `ready` and runs until SIGTERM or SIGINT; then it stops everything it
//! started and cleans up after the node agent.

use std::path::PathBuf;
use std::process::ExitCode;

use podctl_tests::e2e_env::{Agent, Env, Options};
use podctl_tests::signals::{block_signals, wait_for_signal, write_atomically};

const USAGE: &str = "usage: podctl-e2e-env --bin DIR --work DIR --agent podctl|kubelet|kubelet-containerd [--podctl PATH] [--cluster-dns IP] ENV_FILE";

fn parse_args() -> Result<(Options, PathBuf), String> {
    let mut bin = None;
    let mut work = None;
    let mut agent = None;
    let mut podctl = None;
    let mut dns = "10.96.0.10".to_string();
    let mut env_file = None;
    let mut it = std::env::args().skip(1);
    while let Some(a) = it.next() {
        let mut value = |name: &str| {
            it.next()
                .ok_or_else(|| format!("{name} needs a value\n{USAGE}"))
        };
        match a.as_str() {
            "--bin" => bin = Some(PathBuf::from(value("--bin")?)),
            "--work" => work = Some(PathBuf::from(value("--work")?)),
            "--agent" => {
                let v = value("--agent")?;
                agent =
                    Some(Agent::parse(&v).ok_or_else(|| format!("unknown agent {v:?}\n{USAGE}"))?);
            }
            "--podctl" => podctl = Some(PathBuf::from(value("--podctl")?)),
            "--cluster-dns" => dns = value("--cluster-dns")?,
            "-h" | "--help" => return Err(USAGE.into()),
            s if s.starts_with('-') => return Err(format!("unknown option {s}\n{USAGE}")),
            _ if env_file.is_none() => env_file = Some(PathBuf::from(a)),
            _ => return Err(format!("one ENV_FILE only\n{USAGE}")),
        }
    }
    let o = Options {
        bin: bin.ok_or_else(|| format!("--bin is required\n{USAGE}"))?,
        work: work.ok_or_else(|| format!("--work is required\n{USAGE}"))?,
        agent: agent.ok_or_else(|| format!("--agent is required\n{USAGE}"))?,
        podctl: podctl.unwrap_or_else(|| podctl_tests::workspace_bin("podctl")),
        cluster_dns: dns,
    };
    Ok((o, env_file.ok_or_else(|| USAGE.to_string())?))
}

fn main() -> ExitCode {
    let signals = match block_signals() {
        Ok(s) => s,
        Err(e) => {
            eprintln!("podctl-e2e-env: {e}");
            return ExitCode::FAILURE;
        }
    };
    let (opts, env_file) = match parse_args() {
        Ok(a) => a,
        Err(e) => {
            eprintln!("{e}");
            return ExitCode::from(2);
        }
    };
    // Set-up failures panic with the reason; the drops of what was
    // started so far still run while unwinding.
    let env = Env::start(&opts);
    if let Err(e) = write_atomically(&env_file, &env.env_lines()) {
        eprintln!("podctl-e2e-env: {e}");
        return ExitCode::FAILURE;
    }
    println!("ready");
    eprintln!(
        "podctl-e2e-env: node {} Ready; SIGTERM or SIGINT stops",
        env.node
    );
    let sig = wait_for_signal(&signals);
    eprintln!("podctl-e2e-env: signal {sig}, tearing down");
    drop(env);
    ExitCode::SUCCESS
}
