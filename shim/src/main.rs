//! `podctl-shim`: see the library documentation.
//!
//! ```text
//! podctl-shim create --id ID --bundle DIR --root DIR --dir DIR --log FILE [--pod-dir DIR] [--oom-file F] [--oom-parent F] [--systemd] [--stdin [--stdin-once]] [--tty]
//! podctl-shim build  --id ID --bundle DIR --root DIR --stdin-fd N --stdout-fd N --stderr-fd N --ready-fd N [--systemd]   (internal: the pod monitor's)
//! podctl-shim monitor --dir DIR --listen-fd N   (internal: the pod monitor, when podctl-shim-watch is missing)
//! podctl-shim exec   --id ID --root DIR --process FILE --status FILE [--timeout-ms N] [--stdin] [--tty [--resize FIFO]]
//! podctl-shim start  --id ID --root DIR
//! podctl-shim kill   --id ID --root DIR --signal N [--all]
//! podctl-shim delete --id ID --root DIR [--force]
//! podctl-shim pause  --dir DIR [--hostname NAME] [--namespaces network,ipc,uts,pid]
//!                    [--uid-map C:H:L --gid-map C:H:L]   (a user namespace of its own)
//! ```

mod build;
mod diag;
mod exec;
mod pause;

use std::collections::HashMap;
use std::path::PathBuf;
use std::process::ExitCode;

use libcontainer::container::Container;

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    match run(&args) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("podctl-shim: {e}{}", diag::cause());
            ExitCode::FAILURE
        }
    }
}

/// `--key value` and `--flag` arguments after the subcommand.
struct Args {
    values: HashMap<String, String>,
}

impl Args {
    fn parse(raw: &[String]) -> Result<Self, String> {
        let mut values = HashMap::new();
        let mut i = 0;
        while i < raw.len() {
            let key = raw[i]
                .strip_prefix("--")
                .ok_or_else(|| format!("unexpected argument {:?}", raw[i]))?;
            match raw.get(i + 1) {
                Some(v) if !v.starts_with("--") => {
                    values.insert(key.to_string(), v.clone());
                    i += 2;
                }
                _ => {
                    values.insert(key.to_string(), String::new());
                    i += 1;
                }
            }
        }
        Ok(Args { values })
    }

    fn get(&self, key: &str) -> Result<&str, String> {
        self.values
            .get(key)
            .map(String::as_str)
            .filter(|v| !v.is_empty())
            .ok_or_else(|| format!("missing --{key}"))
    }

    fn path(&self, key: &str) -> Result<PathBuf, String> {
        self.get(key).map(PathBuf::from)
    }

    fn flag(&self, key: &str) -> bool {
        self.values.contains_key(key)
    }
}

fn run(raw: &[String]) -> Result<(), String> {
    let (cmd, rest) = raw.split_first().ok_or("missing subcommand")?;
    let a = Args::parse(rest)?;
    let id = a.values.get("id").cloned().unwrap_or_default();
    if matches!(cmd.as_str(), "build" | "exec" | "start" | "kill" | "delete") {
        diag::install();
    }
    match cmd.as_str() {
        "create" => build::create(
            podctl_shim::podmon::request::CreateRequest {
                id: a.get("id")?.to_string(),
                bundle: a.path("bundle")?,
                root: a.path("root")?,
                dir: a.path("dir")?,
                log: a.path("log")?,
                systemd: a.flag("systemd"),
                oom_file: a.values.get("oom-file").map(PathBuf::from),
                oom_parent: a.values.get("oom-parent").map(PathBuf::from),
                stdin: a.flag("stdin"),
                stdin_once: a.flag("stdin-once"),
                tty: a.flag("tty"),
                shim: PathBuf::new(),
            },
            a.values
                .get("pod-dir")
                .filter(|v| !v.is_empty())
                .map(PathBuf::from),
        ),
        "build" => {
            let fd = |k: &str| -> Result<i32, String> {
                a.get(k)?.parse().map_err(|e| format!("--{k}: {e}"))
            };
            build::build(build::BuildArgs {
                id: a.get("id")?.to_string(),
                bundle: a.path("bundle")?,
                root: a.path("root")?,
                systemd: a.flag("systemd"),
                stdin: fd("stdin-fd")?,
                stdout: fd("stdout-fd")?,
                stderr: fd("stderr-fd")?,
                ready: fd("ready-fd")?,
            })
        }
        "monitor" => podctl_shim::podmon::run(podctl_shim::podmon::parse_args(rest)?),
        "exec" => exec::run(exec::ExecArgs {
            id: a.get("id")?.to_string(),
            root: a.path("root")?,
            process: a.path("process")?,
            status: a.path("status")?,
            timeout: std::time::Duration::from_millis(
                a.values
                    .get("timeout-ms")
                    .and_then(|v| v.parse().ok())
                    .unwrap_or(0),
            ),
            stdin: a.flag("stdin"),
            tty: a.flag("tty"),
            resize: a
                .values
                .get("resize")
                .filter(|v| !v.is_empty())
                .map(PathBuf::from),
        }),
        "pause" => pause::start(pause::PauseArgs {
            dir: a.path("dir")?,
            hostname: a.values.get("hostname").cloned().unwrap_or_default(),
            new_namespaces: a
                .values
                .get("namespaces")
                .map(|v| {
                    v.split(',')
                        .filter(|s| !s.is_empty())
                        .map(str::to_string)
                        .collect()
                })
                .unwrap_or_default(),
            id_maps: match (a.values.get("uid-map"), a.values.get("gid-map")) {
                (Some(u), Some(g)) => Some((u.replace(':', " "), g.replace(':', " "))),
                _ => None,
            },
        }),
        "start" => load(&a)?.start().map_err(|e| format!("start {}: {e}", id)),
        "kill" => {
            let sig = libcontainer::signal::Signal::try_from(a.get("signal")?)
                .map_err(|e| e.to_string())?;
            load(&a)?
                .kill(sig, a.flag("all"))
                .map_err(|e| format!("kill {}: {e}", id))
        }
        "delete" => load(&a)?
            .delete(a.flag("force"))
            .map_err(|e| format!("delete {}: {e}", id)),
        other => Err(format!("unknown subcommand {other:?}")),
    }
}

fn load(a: &Args) -> Result<Container, String> {
    let dir = a.path("root")?.join(a.get("id")?);
    Container::load(dir.clone()).map_err(|e| format!("load {}: {e}", dir.display()))
}
