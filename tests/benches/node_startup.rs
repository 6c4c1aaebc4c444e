//! Pod startup latency through the API, as the kubelet's SLI defines it:
//! from a pod's creation (the client's POST) to all its containers
//! started, observed through a watch; the image is already on the node.
//!
//! ```text
//! E2E_BIN=/path/to/bin cargo bench -p podctl-tests --bench node_startup
//! ```
//!
//! For each node agent — `podctl node`, and a stock kubelet on a private
//! containerd (Debian's containerd and runc) — a one-node cluster on
//! loopback (`podctl_tests::e2e_env`, as the e2e suite runs), then:
//! a steady stream of pods at 10 per second, and a burst of 110 pods (the
//! kubelet's default max-pods) created at once by 8 clients. Prints
//! p50/p90/p99/max and the time until the last pod ran, side by side.
//! `PODCTL_BENCH_AGENTS` picks agents (`podctl,kubelet-containerd`, also
//! `kubelet`: a stock kubelet on `podctl serve`), `PODCTL_BENCH_BURST` and
//! `PODCTL_BENCH_STEADY` the pod counts. Skipped with a message without
//! the Kubernetes binaries (see the README).

use std::collections::HashMap;
use std::io::{BufRead, BufReader};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use podctl_tests::e2e_env::{start_for_test, Agent, Env};
use serde_json::{json, Value};

type Result<T> = std::result::Result<T, String>;

const CLIENTS: usize = 8;
const STEADY_RATE: f64 = 10.0;

fn main() {
    let agents: Vec<Agent> = std::env::var("PODCTL_BENCH_AGENTS")
        .unwrap_or_else(|_| "podctl,kubelet-containerd".into())
        .split(',')
        .filter_map(|a| Agent::parse(a.trim()))
        .collect();
    let burst = count("PODCTL_BENCH_BURST", 110);
    let steady = count("PODCTL_BENCH_STEADY", 50);
    let mut rows = Vec::new();
    for agent in agents {
        if agent == Agent::KubeletOnContainerd && which("containerd").is_none() {
            println!("kubelet-containerd: skipped, no containerd (apt-get install containerd)");
            continue;
        }
        let Some(env) = start_for_test(agent) else {
            return;
        };
        println!("{}: node {} Ready", name(agent), env.node);
        match measure(&env, steady, burst) {
            Ok((s, b)) => rows.push((agent, s, b)),
            Err(e) => {
                eprintln!("{}: {e}", name(agent));
                std::process::exit(1);
            }
        }
        drop(env);
    }
    report(&rows, steady, burst);
}

fn count(var: &str, default: usize) -> usize {
    std::env::var(var)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn which(name: &str) -> Option<std::path::PathBuf> {
    std::env::var_os("PATH").and_then(|p| {
        std::env::split_paths(&p)
            .map(|d| d.join(name))
            .find(|p| p.is_file())
    })
}

fn name(a: Agent) -> &'static str {
    match a {
        Agent::Podctl => "podctl node",
        Agent::KubeletOnPodctl => "kubelet + podctl serve",
        Agent::KubeletOnContainerd => "kubelet + containerd",
    }
}

/// Latencies of one phase, and the time from its first creation to its
/// last pod running.
struct Phase {
    latencies: Vec<Duration>,
    total: Duration,
}

/// The API server as admin (the env's client certificate).
struct Api {
    http: reqwest::blocking::Client,
    server: String,
}

impl Api {
    fn new(env: &Env) -> Result<Api> {
        let kc: serde_yaml::Value = serde_yaml::from_str(
            &std::fs::read_to_string(&env.admin).map_err(|e| format!("{:?}: {e}", env.admin))?,
        )
        .map_err(|e| e.to_string())?;
        let field = |section: &str, key: &str| -> Result<Vec<u8>> {
            let path = kc[section][0][section.trim_end_matches('s')][key]
                .as_str()
                .ok_or_else(|| format!("kubeconfig: no {section}.{key}"))?;
            std::fs::read(path).map_err(|e| format!("{path}: {e}"))
        };
        let ca = reqwest::Certificate::from_pem(&field("clusters", "certificate-authority")?)
            .map_err(|e| e.to_string())?;
        let mut pem = field("users", "client-certificate")?;
        pem.extend(field("users", "client-key")?);
        let id = reqwest::Identity::from_pem(&pem).map_err(|e| e.to_string())?;
        let http = reqwest::blocking::Client::builder()
            .add_root_certificate(ca)
            .identity(id)
            .timeout(None)
            .build()
            .map_err(|e| e.to_string())?;
        Ok(Api {
            http,
            server: env.cluster.server.clone(),
        })
    }

    fn get(&self, path: &str) -> Result<(u16, Value)> {
        let r = self
            .http
            .get(format!("{}{path}", self.server))
            .send()
            .map_err(|e| format!("GET {path}: {e}"))?;
        let code = r.status().as_u16();
        Ok((code, r.json().unwrap_or_default()))
    }

    fn post(&self, path: &str, body: &Value) -> Result<()> {
        let r = self
            .http
            .post(format!("{}{path}", self.server))
            .json(body)
            .send()
            .map_err(|e| format!("POST {path}: {e}"))?;
        if !r.status().is_success() {
            return Err(format!(
                "POST {path}: {} {}",
                r.status(),
                r.text().unwrap_or_default()
            ));
        }
        Ok(())
    }

    fn delete(&self, path: &str) -> Result<()> {
        self.http
            .delete(format!("{}{path}", self.server))
            .send()
            .map_err(|e| format!("DELETE {path}: {e}"))?;
        Ok(())
    }

    fn wait(
        &self,
        what: &str,
        secs: u64,
        mut done: impl FnMut(&Api) -> Result<bool>,
    ) -> Result<()> {
        let deadline = Instant::now() + Duration::from_secs(secs);
        while !done(self)? {
            if Instant::now() > deadline {
                return Err(format!("timed out ({secs} s) waiting for {what}"));
            }
            std::thread::sleep(Duration::from_millis(200));
        }
        Ok(())
    }

    /// A namespace whose default service account exists (pods need it).
    fn namespace(&self, ns: &str) -> Result<()> {
        self.post("/api/v1/namespaces", &json!({"metadata": {"name": ns}}))?;
        self.wait("the default service account", 60, |a| {
            Ok(
                a.get(&format!("/api/v1/namespaces/{ns}/serviceaccounts/default"))?
                    .0
                    == 200,
            )
        })
    }

    /// Delete the namespace and wait until none of its pods is left.
    fn drain(&self, ns: &str) -> Result<()> {
        self.delete(&format!("/api/v1/namespaces/{ns}"))?;
        self.wait("the pods' deletion", 600, |a| {
            let (_, v) = a.get(&format!("/api/v1/namespaces/{ns}/pods"))?;
            Ok(v["items"].as_array().is_none_or(|i| i.is_empty()))
        })
    }
}

fn pod(name: &str, image: &str) -> Value {
    json!({
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": name},
        "spec": {
            "terminationGracePeriodSeconds": 1,
            "automountServiceAccountToken": false,
            "containers": [{
                "name": "c",
                "image": image,
                "imagePullPolicy": "IfNotPresent",
                "command": ["sh", "-c", "trap 'exit 0' TERM; sleep 3600 & wait"],
            }],
        },
    })
}

/// All containers of the pod started (the SLI's "running").
fn started(p: &Value) -> bool {
    let want = p["spec"]["containers"].as_array().map_or(0, Vec::len);
    let got = p["status"]["containerStatuses"].as_array().map_or(0, |cs| {
        cs.iter()
            .filter(|c| c["state"]["running"].is_object())
            .count()
    });
    want > 0 && got == want
}

/// Watch the namespace's pods, recording when each is first seen
/// started, until `n` are.
fn watch(api: &Api, ns: &str, n: usize, seen: Arc<Mutex<HashMap<String, Instant>>>) -> Result<()> {
    let r = api
        .http
        .get(format!(
            "{}/api/v1/namespaces/{ns}/pods?watch=true",
            api.server
        ))
        .send()
        .map_err(|e| format!("watch: {e}"))?;
    for line in BufReader::new(r).lines() {
        let line = line.map_err(|e| format!("watch: {e}"))?;
        let Ok(ev) = serde_json::from_str::<Value>(&line) else {
            continue;
        };
        let p = &ev["object"];
        if started(p) {
            let name = p["metadata"]["name"].as_str().unwrap_or("").to_string();
            let mut s = seen.lock().map_err(|e| e.to_string())?;
            s.entry(name).or_insert_with(Instant::now);
            if s.len() >= n {
                return Ok(());
            }
        }
    }
    Err("watch ended early".into())
}

/// Create `n` pods in `ns` by `clients` clients (each `gap` apart when
/// given), wait for all to start; their latencies.
fn phase(
    api: &Arc<Api>,
    ns: &str,
    image: &str,
    n: usize,
    clients: usize,
    gap: Option<Duration>,
) -> Result<Phase> {
    api.namespace(ns)?;
    let seen = Arc::new(Mutex::new(HashMap::new()));
    let watcher = {
        let (api, ns, seen) = (api.clone(), ns.to_string(), seen.clone());
        std::thread::spawn(move || watch(&api, &ns, n, seen))
    };
    // The watch is open before the first creation.
    std::thread::sleep(Duration::from_millis(500));
    let created = Arc::new(Mutex::new(HashMap::new()));
    let t0 = Instant::now();
    let mut posters = Vec::new();
    for c in 0..clients {
        let (api, ns, image, created) = (
            api.clone(),
            ns.to_string(),
            image.to_string(),
            created.clone(),
        );
        posters.push(std::thread::spawn(move || -> Result<()> {
            for i in (c..n).step_by(clients) {
                if let Some(g) = gap {
                    let at = t0 + g.mul_f64(i as f64);
                    std::thread::sleep(at.saturating_duration_since(Instant::now()));
                }
                let name = format!("p{i}");
                let at = Instant::now();
                api.post(
                    &format!("/api/v1/namespaces/{ns}/pods"),
                    &pod(&name, &image),
                )?;
                created.lock().map_err(|e| e.to_string())?.insert(name, at);
            }
            Ok(())
        }));
    }
    for p in posters {
        p.join().map_err(|_| "a client panicked".to_string())??;
    }
    watcher
        .join()
        .map_err(|_| "the watch panicked".to_string())??;
    let seen = seen.lock().map_err(|e| e.to_string())?;
    let created = created.lock().map_err(|e| e.to_string())?;
    let mut latencies = Vec::new();
    let mut last = t0;
    for (name, at) in created.iter() {
        let ran = seen
            .get(name)
            .ok_or_else(|| format!("{name}: never seen running"))?;
        latencies.push(ran.saturating_duration_since(*at));
        last = last.max(*ran);
    }
    latencies.sort();
    Ok(Phase {
        latencies,
        total: last.saturating_duration_since(t0),
    })
}

fn measure(env: &Env, steady: usize, burst: usize) -> Result<(Phase, Phase)> {
    let api = Arc::new(Api::new(env)?);
    let image = format!("{}/busybox:1.29-2", env.e2e_registry());
    // The image on the node first: the SLI leaves pulls out.
    api.namespace("warm")?;
    api.post("/api/v1/namespaces/warm/pods", &pod("warm", &image))?;
    api.wait("the warm-up pod", 300, |a| {
        Ok(started(&a.get("/api/v1/namespaces/warm/pods/warm")?.1))
    })?;
    api.drain("warm")?;
    let gap = Duration::from_secs_f64(1.0 / STEADY_RATE);
    let s = phase(&api, "steady", &image, steady, 1, Some(gap))?;
    api.drain("steady")?;
    let b = phase(&api, "burst", &image, burst, CLIENTS, None)?;
    api.drain("burst")?;
    Ok((s, b))
}

fn pct(v: &[Duration], p: usize) -> f64 {
    if v.is_empty() {
        return 0.0;
    }
    let i = ((v.len() * p).div_ceil(100)).clamp(1, v.len()) - 1;
    v[i].as_secs_f64()
}

fn report(rows: &[(Agent, Phase, Phase)], steady: usize, burst: usize) {
    println!();
    println!(
        "pod startup latency through the API (creation → all containers started, seen by a watch), seconds:"
    );
    println!(
        "{:<24} {:<28} {:>6} {:>6} {:>6} {:>6} {:>8}",
        "node", "phase", "p50", "p90", "p99", "max", "all ran"
    );
    for (agent, s, b) in rows {
        for (label, ph) in [
            (format!("steady {steady} pods at {STEADY_RATE}/s"), s),
            (format!("burst {burst} pods, {CLIENTS} clients"), b),
        ] {
            println!(
                "{:<24} {:<28} {:>6.2} {:>6.2} {:>6.2} {:>6.2} {:>8.2}",
                name(*agent),
                label,
                pct(&ph.latencies, 50),
                pct(&ph.latencies, 90),
                pct(&ph.latencies, 99),
                ph.latencies.last().map_or(0.0, Duration::as_secs_f64),
                ph.total.as_secs_f64()
            );
        }
    }
}
