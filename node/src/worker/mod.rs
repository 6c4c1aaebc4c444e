//! The per-pod worker: an explicit state machine that drives one pod
//! through the CRI service until it is what its spec says, woken by probe
//! verdicts and stop requests and resyncing every `resync` as a safety net.
//!
//! ```text
//!  NoSandbox ──RunPodSandbox──▶ Initializing ──init containers done──▶ Running
//!      │                          │  (in order; sidecars started          │
//!      │                          │   and kept running)                   │ app containers exit
//!      │                          ▼                                       ▼ and none restarts
//!      └────────────── stop ──▶ Terminating ──containers gone──▶ Terminated (Succeeded/Failed)
//! ```

mod hooks;
mod image;
mod kill;
mod message;
mod names;
mod sandbox;
mod start;
mod update;

pub use update::{spec_hash, HASH_ANNOTATION};

use std::collections::{BTreeMap, HashMap};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use k8s_openapi::api::core::v1::{Container, Pod, PodStatus};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use podctl_cri::proto;
use tokio::sync::watch;
use tokio::task::JoinHandle;

use crate::backoff::{Backoff, BackoffPolicy};
use crate::cri::{self, Cri};
use crate::events::{Event, EventSink, EventType};
use crate::probe;
use crate::sources::Sources;
use crate::status::{self, is_sidecar, SandboxFacts, Track};

pub use sandbox::{FAILED_MOUNT, FAILED_SANDBOX};

/// Settings shared by every worker of a node.
#[derive(Clone, Debug)]
pub struct WorkerConfig {
    pub backoff: BackoffPolicy,
    /// Full resync period.
    pub resync: Duration,
    /// Pod log directories are `<log_root>/<ns>_<name>_<uid>`.
    pub log_root: PathBuf,
    /// Per-pod directories (termination messages, volumes).
    pub pods_root: PathBuf,
    pub node_name: String,
    pub host_ip: String,
    /// How often configMap, secret, downwardAPI and projected volumes are
    /// rewritten from their sources (service-account tokens rotate then).
    pub volume_sync: Duration,
    /// Name servers of ClusterFirst pods (`--cluster-dns`); empty: pods
    /// get the node's resolv.conf, as the kubelet falls back to.
    pub cluster_dns: Vec<String>,
    /// The cluster's DNS domain (`--cluster-domain`).
    pub cluster_domain: String,
    /// The node's resolv.conf, the base of `Default` pods' DNS.
    pub host_resolv_conf: PathBuf,
    /// Sysctls admitted besides the safe set (names or `prefix*`).
    pub allowed_unsafe_sysctls: Vec<String>,
}

impl Default for WorkerConfig {
    fn default() -> Self {
        WorkerConfig {
            backoff: BackoffPolicy::default(),
            resync: Duration::from_secs(1),
            log_root: PathBuf::from("/var/log/pods"),
            pods_root: PathBuf::from("/var/lib/podctl/pods"),
            node_name: String::new(),
            host_ip: String::new(),
            volume_sync: Duration::from_secs(60),
            cluster_dns: Vec::new(),
            cluster_domain: "cluster.local".into(),
            host_resolv_conf: PathBuf::from("/etc/resolv.conf"),
            allowed_unsafe_sysctls: Vec::new(),
        }
    }
}

/// Where the worker is in the pod's life.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Stage {
    NoSandbox,
    Initializing,
    Running,
    Terminating,
    Terminated,
}

/// Asking a worker to stop the pod.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Stop {
    /// Overrides `terminationGracePeriodSeconds`.
    pub grace: Option<Duration>,
    /// Evicted (node pressure): the pod ends Failed, reason `Evicted`,
    /// with this message.
    pub evict: Option<String>,
}

pub struct PodWorker<C: Cri> {
    cri: C,
    cfg: WorkerConfig,
    pod: Pod,
    name: String,
    ns: String,
    uid: String,
    sources: Arc<dyn Sources>,
    events: Arc<dyn EventSink>,
    status_tx: watch::Sender<PodStatus>,
    stage: Stage,
    sandbox: Option<(String, proto::PodSandboxConfig)>,
    facts: SandboxFacts,
    tracks: BTreeMap<String, Track>,
    backoff: Backoff,
    /// Exits already fed to the back-off (container IDs).
    counted: Vec<String>,
    probes: HashMap<String, Vec<JoinHandle<()>>>,
    results: probe::Results,
    start_time: Option<Time>,
    terminal: Option<&'static str>,
    message: Option<String>,
    /// Why the sandbox could not be made while it is retried
    /// (FailedCreatePodSandBox, FailedMount): the pod status's reason.
    sandbox_failed: Option<&'static str>,
    /// Earliest back-off expiry of this pass: wake then, not a resync later.
    wake: Option<Duration>,
    volumes: Option<crate::volumes::Volumes>,
    synced: Instant,
    /// Newer versions of the pod from the API (the node agent's).
    updates: Option<watch::Receiver<Pod>>,
    /// Why the pod failed as a whole (e.g. DeadlineExceeded).
    reason: Option<String>,
    /// Every init container completed (app containers may start).
    init_done: bool,
}

impl<C: Cri> PodWorker<C> {
    pub fn new(
        cri: C,
        cfg: WorkerConfig,
        pod: Pod,
        sources: Arc<dyn Sources>,
        events: Arc<dyn EventSink>,
    ) -> crate::Result<(Self, watch::Receiver<PodStatus>)> {
        let (name, ns, uid) = crate::convert::identity(&pod)?;
        let (status_tx, status_rx) = watch::channel(PodStatus {
            phase: Some("Pending".into()),
            ..Default::default()
        });
        let backoff = Backoff::new(cfg.backoff);
        Ok((
            PodWorker {
                cri,
                cfg,
                pod,
                name,
                ns,
                uid,
                sources,
                events,
                status_tx,
                stage: Stage::NoSandbox,
                sandbox: None,
                facts: SandboxFacts::default(),
                tracks: BTreeMap::new(),
                backoff,
                counted: Vec::new(),
                probes: HashMap::new(),
                results: probe::Results::default(),
                start_time: None,
                terminal: None,
                message: None,
                sandbox_failed: None,
                wake: None,
                volumes: None,
                synced: Instant::now(),
                updates: None,
                reason: None,
                init_done: false,
            },
            status_rx,
        ))
    }

    /// The pod's UID (generated when the manifest had none).
    pub fn uid(&self) -> &str {
        &self.uid
    }

    /// What the downward API and env see of this pod.
    fn facts(&self) -> crate::envvars::PodFacts {
        let spec = self.pod.spec.as_ref();
        crate::envvars::PodFacts {
            name: self.name.clone(),
            namespace: self.ns.clone(),
            uid: self.uid.clone(),
            node_name: spec
                .and_then(|s| s.node_name.clone())
                .unwrap_or_else(|| self.cfg.node_name.clone()),
            host_ip: self.cfg.host_ip.clone(),
            pod_ips: self.facts.ips.clone(),
            service_account: spec
                .and_then(|s| s.service_account_name.clone())
                .unwrap_or_else(|| "default".into()),
        }
    }

    fn full_name(&self) -> String {
        format!("{}/{}", self.ns, self.name)
    }

    fn event(
        &self,
        container: Option<&str>,
        kind: EventType,
        reason: &'static str,
        message: String,
    ) {
        self.events.emit(Event {
            namespace: self.ns.clone(),
            pod: self.name.clone(),
            uid: self.uid.clone(),
            field_path: container.map(|c| format!("spec.containers{{{c}}}")),
            kind,
            reason,
            message,
        });
    }

    /// Drive the pod until it is stopped (or, for a finished pod, until
    /// asked to stop); returns the final status.
    pub async fn run(mut self, mut stop: watch::Receiver<Option<Stop>>) -> PodStatus {
        loop {
            let requested = stop.borrow().clone();
            if let Some(s) = requested {
                if let Some(msg) = s.evict {
                    self.mark_evicted(msg);
                }
                self.terminate(s.grace).await;
                self.publish();
                return self.status_tx.borrow().clone();
            }
            self.wake = None;
            if let Err(e) = self.reconcile().await {
                tracing::warn!(pod = %self.full_name(), error = %e, "reconcile");
                self.message = Some(e.to_string());
            }
            self.publish();
            if self.stage == Stage::Terminated {
                return self.status_tx.borrow().clone();
            }
            self.sync_volumes().await;
            let changed = self.results.changed.clone();
            let nap = self
                .wake
                .map_or(self.cfg.resync, |w| w.min(self.cfg.resync));
            let updated = async {
                match self.updates.as_mut() {
                    Some(rx) => rx.changed().await.is_ok(),
                    None => std::future::pending().await,
                }
            };
            tokio::select! {
                _ = tokio::time::sleep(nap) => {}
                _ = changed.notified() => {}
                more = updated => {
                    match self.updates.as_mut().filter(|_| more) {
                        Some(rx) => {
                            let pod = rx.borrow_and_update().clone();
                            self.take_update(pod).await;
                        }
                        None => self.updates = None,
                    }
                }
                r = stop.changed() => {
                    if r.is_err() {
                        // The owner went away: stop as if asked to.
                        self.terminate(None).await;
                        self.publish();
                        return self.status_tx.borrow().clone();
                    }
                }
            }
        }
    }

    /// Rewrite the pod's source-backed volumes every `volume_sync`.
    async fn sync_volumes(&mut self) {
        if self.synced.elapsed() < self.cfg.volume_sync {
            return;
        }
        self.synced = Instant::now();
        let facts = self.facts();
        if let Some(v) = self.volumes.as_mut() {
            if let Err(e) = v.refresh(&self.pod, &facts, self.sources.as_ref()).await {
                tracing::warn!(pod = %self.full_name(), error = %e, "volume sync");
            }
        }
    }

    fn publish(&self) {
        let prev = self.status_tx.borrow().clone();
        let mut st = status::pod_status(&status::Observed {
            pod: &self.pod,
            sandbox: &self.facts,
            tracks: &self.tracks,
            initialized: self.init_done,
            terminal: self.terminal,
            start_time: self.start_time.clone(),
            previous: Some(&prev),
            message: self.message.clone(),
            reason: self.reason.clone(),
        });
        if let Some(r) = self.sandbox_failed {
            st.reason = Some(r.to_string());
        }
        self.status_tx.send_replace(st);
    }

    fn spec_containers(&self) -> (Vec<Container>, Vec<Container>) {
        let spec = self.pod.spec.clone().unwrap_or_default();
        (spec.init_containers.unwrap_or_default(), spec.containers)
    }

    fn restart_policy(&self) -> String {
        self.pod
            .spec
            .as_ref()
            .and_then(|s| s.restart_policy.clone())
            .unwrap_or_else(|| "Always".into())
    }

    /// One pass of the state machine.
    async fn reconcile(&mut self) -> crate::Result<()> {
        if matches!(self.stage, Stage::Terminated | Stage::Terminating) {
            return Ok(());
        }
        if self.sandbox.is_none() {
            if !self.make_sandbox().await {
                return Ok(());
            }
            self.stage = Stage::Initializing;
        }
        self.refresh().await?;
        if self.past_deadline().await {
            return Ok(());
        }
        let (inits, apps) = self.spec_containers();
        if self.stage == Stage::Initializing {
            if !self.step_init(&inits).await? {
                return Ok(());
            }
            self.init_done = true;
            self.stage = Stage::Running;
        }
        // Sidecars stay up while the pod runs.
        for c in inits.iter().filter(|c| is_sidecar(c)) {
            self.keep_running(c, true).await?;
        }
        let mut finished = true;
        for c in &apps {
            let restart = self.keep_running(c, false).await?;
            let t = self.tracks.get(&c.name).cloned().unwrap_or_default();
            finished &= t.exit_code().is_some() && !restart;
        }
        if finished && !apps.is_empty() {
            let failed = apps.iter().any(|c| {
                self.tracks
                    .get(&c.name)
                    .and_then(Track::exit_code)
                    .is_some_and(|code| code != 0)
            });
            self.finish(if failed { "Failed" } else { "Succeeded" })
                .await;
        }
        Ok(())
    }

    /// Init containers in order; true once all completed (sidecars:
    /// started).
    async fn step_init(&mut self, inits: &[Container]) -> crate::Result<bool> {
        for c in inits {
            if is_sidecar(c) {
                self.keep_running(c, true).await?;
                let t = self.tracks.get(&c.name).cloned().unwrap_or_default();
                if !(t.running() && t.started) {
                    return Ok(false);
                }
                continue;
            }
            let t = self.tracks.get(&c.name).cloned().unwrap_or_default();
            match t.exit_code() {
                Some(0) => continue,
                Some(code) if self.restart_policy() == "Never" => {
                    self.message = Some(format!("init container {} exited {code}", c.name));
                    self.finish("Failed").await;
                    return Ok(false);
                }
                Some(_) => {
                    self.restart_later_or_now(c).await?;
                    return Ok(false);
                }
                None if t.current.is_none()
                    && t.waiting
                        .as_ref()
                        .is_none_or(|(r, _)| r != "CrashLoopBackOff") =>
                {
                    self.start(c).await?;
                    return Ok(false);
                }
                None => return Ok(false),
            }
        }
        Ok(true)
    }

    /// Keep one container as its restart policy wants; returns whether it
    /// will be (re)started after exiting.
    async fn keep_running(&mut self, c: &Container, sidecar: bool) -> crate::Result<bool> {
        let policy = if sidecar {
            "Always".to_string()
        } else {
            self.restart_policy()
        };
        let t = self.tracks.get(&c.name).cloned().unwrap_or_default();
        if t.running() && self.definition_changed(c) {
            self.restart_changed(c).await?;
            return Ok(true);
        }
        if t.running() {
            self.check_liveness(c).await?;
            return Ok(true);
        }
        let Some(code) = t.exit_code() else {
            if t.current.is_none() {
                self.start(c).await?;
            }
            return Ok(true);
        };
        let restart = match policy.as_str() {
            "Never" => false,
            "OnFailure" => code != 0,
            _ => true,
        };
        if restart {
            self.restart_later_or_now(c).await?;
        }
        Ok(restart)
    }

    /// A container exited and should run again: after its back-off.
    async fn restart_later_or_now(&mut self, c: &Container) -> crate::Result<()> {
        let now = Instant::now();
        let Some(cur) = self.tracks.get(&c.name).and_then(|t| t.current.clone()) else {
            return Ok(());
        };
        if !self.counted.contains(&cur.id) {
            // A container that never started (StartError) did not run at all.
            let ran = if cur.started_at > 0 {
                Duration::from_nanos((cur.finished_at - cur.started_at).max(0) as u64)
            } else {
                Duration::ZERO
            };
            let delay = self.backoff.exited(&c.name, now, ran);
            self.counted.push(cur.id.clone());
            if !delay.is_zero() {
                self.event(
                    Some(&c.name),
                    EventType::Warning,
                    "BackOff",
                    format!("Back-off {}s restarting failed container", delay.as_secs()),
                );
            }
        }
        let left = self.backoff.remaining(&c.name, now);
        if left.is_zero() {
            self.start(c).await
        } else {
            self.wake = Some(self.wake.map_or(left, |w| w.min(left)));
            let delay = self.backoff.delay(&c.name).as_secs();
            if let Some(t) = self.tracks.get_mut(&c.name) {
                t.waiting = Some((
                    "CrashLoopBackOff".into(),
                    format!(
                        "back-off {delay}s restarting failed container={} pod={}_{}({})",
                        c.name, self.name, self.ns, self.uid
                    ),
                ));
            }
            Ok(())
        }
    }

    async fn check_liveness(&mut self, c: &Container) -> crate::Result<()> {
        let Some(id) = self
            .tracks
            .get(&c.name)
            .and_then(|t| t.current.as_ref())
            .map(|s| s.id.clone())
        else {
            return Ok(());
        };
        for kind in [probe::Kind::Startup, probe::Kind::Liveness] {
            let v = self.results.get(&id, kind);
            if v.ok == Some(false) {
                self.event(
                    Some(&c.name),
                    EventType::Warning,
                    "Unhealthy",
                    format!("{} probe failed: {}", kind.name(), v.message),
                );
                self.event(
                    Some(&c.name),
                    EventType::Normal,
                    "Killing",
                    format!(
                        "Container {} failed {} probe, will be restarted",
                        c.name,
                        kind.name().to_lowercase()
                    ),
                );
                self.kill_container(c, None).await;
                self.refresh().await?;
                break;
            }
        }
        Ok(())
    }

    /// Update every tracked container from the runtime, and readiness.
    async fn refresh(&mut self) -> crate::Result<()> {
        let names: Vec<String> = self.tracks.keys().cloned().collect();
        let (inits, apps) = self.spec_containers();
        for name in names {
            let Some(id) = self
                .tracks
                .get(&name)
                .and_then(|t| t.current.as_ref())
                .map(|c| c.id.clone())
            else {
                continue;
            };
            let st = cri::container_status(&self.cri, &id).await?;
            let spec = inits
                .iter()
                .chain(apps.iter())
                .find(|c| c.name == name)
                .cloned();
            let Some(t) = self.tracks.get_mut(&name) else {
                continue;
            };
            if let Some(mut st) = st {
                let exited_now = st.state == proto::ContainerState::ContainerExited as i32
                    && t.current.as_ref().is_some_and(|c| c.state != st.state);
                if st.state == proto::ContainerState::ContainerExited as i32 {
                    // Keep the termination message once read.
                    match t
                        .current
                        .as_ref()
                        .filter(|c| c.state == st.state && !c.message.is_empty())
                    {
                        Some(old) => st.message = old.message.clone(),
                        None => st = message::with_message(&self.cfg, &self.uid, spec.as_ref(), st),
                    }
                }
                t.current = Some(st);
                if exited_now {
                    for h in self.probes.remove(&id).unwrap_or_default() {
                        h.abort();
                    }
                }
            }
            let running = t.running();
            let started = self.results.get(&id, probe::Kind::Startup).ok == Some(true);
            let has_readiness = spec.as_ref().is_some_and(|s| s.readiness_probe.is_some());
            let ready = if has_readiness {
                self.results.get(&id, probe::Kind::Readiness).ok == Some(true)
            } else {
                started
            };
            t.started = running && started;
            t.ready = running && started && ready;
        }
        if let Some((id, _)) = &self.sandbox {
            let st = podctl_cri::proto::runtime_service_server::RuntimeService::pod_sandbox_status(
                &self.cri,
                tonic::Request::new(proto::PodSandboxStatusRequest {
                    pod_sandbox_id: id.clone(),
                    verbose: false,
                }),
            )
            .await;
            if let Ok(r) = st {
                let s = r.into_inner().status.unwrap_or_default();
                self.facts.ready = s.state == proto::PodSandboxState::SandboxReady as i32;
            }
        }
        Ok(())
    }
}
