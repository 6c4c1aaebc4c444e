//! Pods bound to this node: watched from the API server (kube-runtime's
//! watcher: resourceVersion, bookmarks, relist on 410 Gone), each run by a
//! pod worker of the lifecycle engine, its status patched back (status
//! subresource, UID-guarded, retried), graceful deletion honoured.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::StreamExt;
use k8s_openapi::api::core::v1::{Pod, PodStatus};
use kube::api::{Api, DeleteParams, Patch, PatchParams, Preconditions};
use kube::runtime::watcher::{self, Event as WatchEvent};
use kube::runtime::WatchStreamExt;
use kube::Client;
use podctl_cri::proto;
use tokio::sync::watch;
use tonic::Request;

use crate::cri::Cri;
use crate::error::api_code;
use crate::events::EventSink;
use crate::sources::Sources;
use crate::worker::{PodWorker, Stop, WorkerConfig};

/// One pod this node runs (or ran: a finished pod's containers and logs
/// stay until its API object is deleted, as with the kubelet).
struct Handle {
    stop: watch::Sender<Option<Stop>>,
    /// The pod as the API server has it now (labels, annotations,
    /// images, activeDeadlineSeconds may change while it runs).
    update: watch::Sender<Pod>,
    /// Delete the API object once the containers are gone.
    delete_after: bool,
    /// Its worker is done: it Succeeded or Failed and waits for deletion.
    finished: bool,
}

/// The annotation marking a mirror pod (the API's copy of a static pod).
pub const MIRROR: &str = "kubernetes.io/config.mirror";

/// A static pod: run from a manifest, shown in the API as a mirror pod.
pub fn is_static(p: &Pod) -> bool {
    p.metadata.annotations.as_ref().is_some_and(|a| {
        a.get("kubernetes.io/config.source")
            .is_some_and(|s| s == "file")
    })
}

fn is_mirror(p: &Pod) -> bool {
    p.metadata
        .annotations
        .as_ref()
        .is_some_and(|a| a.contains_key(MIRROR))
}

/// Static, mirror, or of system-critical priority (2 000 000 000 and up):
/// never evicted, nor refused under node pressure.
pub fn is_critical(p: &Pod) -> bool {
    is_static(p)
        || is_mirror(p)
        || p.spec
            .as_ref()
            .and_then(|s| s.priority)
            .is_some_and(|v| v >= 2_000_000_000)
}

/// What the kubelet API's `/pods` shows: the pods with their latest status.
pub type PodView = Arc<Mutex<BTreeMap<String, Pod>>>;

pub struct PodManager<C: Cri> {
    pub cri: C,
    pub client: Client,
    pub node_name: String,
    pub worker: WorkerConfig,
    pub sources: Arc<dyn Sources>,
    pub events: Arc<dyn EventSink>,
    pub view: PodView,
    /// The node's pressure conditions (the eviction manager's): admission
    /// refuses BestEffort pods under memory pressure, all under disk pressure.
    pub pressure: crate::eviction::SharedPressure,
    handles: Arc<Mutex<BTreeMap<String, Handle>>>,
}

/// A mutex's guard, also after a panic elsewhere poisoned it (the maps
/// stay consistent: every update is a single insert or remove).
pub(crate) fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

fn uid_of(p: &Pod) -> String {
    p.metadata.uid.clone().unwrap_or_default()
}

fn key(p: &Pod) -> (String, String) {
    (
        p.metadata
            .namespace
            .clone()
            .unwrap_or_else(|| "default".into()),
        p.metadata.name.clone().unwrap_or_default(),
    )
}

fn terminal(p: &Pod) -> bool {
    matches!(
        p.status.as_ref().and_then(|s| s.phase.as_deref()),
        Some("Succeeded" | "Failed")
    )
}

impl<C: Cri> PodManager<C> {
    pub fn new(
        cri: C,
        client: Client,
        node_name: String,
        worker: WorkerConfig,
        sources: Arc<dyn Sources>,
        events: Arc<dyn EventSink>,
    ) -> Self {
        PodManager {
            cri,
            client,
            node_name,
            worker,
            sources,
            events,
            view: Arc::new(Mutex::new(BTreeMap::new())),
            pressure: Default::default(),
            handles: Arc::new(Mutex::new(BTreeMap::new())),
        }
    }

    /// Watch this node's pods until the stream ends (never, normally).
    pub async fn run(self: Arc<Self>) {
        let api: Api<Pod> = Api::all(self.client.clone());
        let cfg = watcher::Config::default().fields(&format!("spec.nodeName={}", self.node_name));
        let mut stream = watcher::watcher(api, cfg).default_backoff().boxed();
        // UIDs of the (re)list in progress.
        let mut listed: BTreeSet<String> = BTreeSet::new();
        while let Some(ev) = stream.next().await {
            match ev {
                Ok(WatchEvent::Apply(p)) => self.apply(p),
                Ok(WatchEvent::InitApply(p)) => {
                    listed.insert(uid_of(&p));
                    self.apply(p);
                }
                Ok(WatchEvent::Delete(p)) => self.gone(&p),
                Ok(WatchEvent::Init) => listed.clear(),
                Ok(WatchEvent::InitDone) => {
                    let this = self.clone();
                    let known = std::mem::take(&mut listed);
                    tokio::spawn(async move { this.housekeeping(&known).await });
                }
                Err(e) => tracing::warn!(error = %e, "pod watch (retrying)"),
            }
        }
    }

    /// After a (re)list: remove the sandboxes of API pods that are gone
    /// (deleted while the agent was away). Static pods' are left to the
    /// static pod loop.
    async fn housekeeping(&self, known: &BTreeSet<String>) {
        let Ok(list) = self
            .cri
            .list_pod_sandbox(Request::new(proto::ListPodSandboxRequest { filter: None }))
            .await
        else {
            return;
        };
        let running: BTreeSet<String> = self.running().into_iter().collect();
        for sb in list.into_inner().items {
            let Some(uid) = sb.labels.get(crate::cri::POD_UID_LABEL).cloned() else {
                continue;
            };
            let is_static = sb
                .annotations
                .get("kubernetes.io/config.source")
                .is_some_and(|s| s == "file");
            if is_static || known.contains(&uid) || running.contains(&uid) {
                continue;
            }
            tracing::info!(sandbox = %sb.id, %uid, "removing the sandbox of a pod no longer in the API");
            self.remove_sandboxes(&uid, vec![sb.id]).await;
        }
    }

    fn apply(self: &Arc<Self>, pod: Pod) {
        if is_mirror(&pod) {
            return; // ours: its static pod runs from the manifest
        }
        self.start(pod);
    }

    /// Run `pod` (from the API, or a static pod) unless it already runs.
    pub fn start(self: &Arc<Self>, pod: Pod) {
        let uid = uid_of(&pod);
        let deleting = pod.metadata.deletion_timestamp.is_some();
        let mut handles = lock(&self.handles);
        if let Some(h) = handles.get_mut(&uid) {
            if h.finished {
                if deleting && !h.delete_after {
                    // Done long ago: nothing to stop, only to clean up.
                    h.delete_after = true;
                    let this = self.clone();
                    tokio::spawn(async move {
                        this.finish(&pod, true).await;
                        lock(&this.handles).remove(&uid_of(&pod));
                    });
                }
                return;
            }
            if deleting && !h.delete_after {
                h.delete_after = true;
                let grace = pod
                    .metadata
                    .deletion_grace_period_seconds
                    .map(|s| Duration::from_secs(s.max(0) as u64));
                tracing::info!(pod = ?key(&pod), ?grace, "pod deleted: stopping");
                let _ = h.stop.send(Some(Stop { grace, evict: None }));
            }
            if !deleting {
                h.update.send_if_modified(|old| {
                    let conditions = |p: &Pod| p.status.as_ref().and_then(|s| s.conditions.clone());
                    let changed = old.metadata.labels != pod.metadata.labels
                        || old.metadata.annotations != pod.metadata.annotations
                        || old.spec != pod.spec
                        || conditions(old) != conditions(&pod);
                    if changed {
                        *old = pod.clone();
                    }
                    changed
                });
            }
            return;
        }
        if deleting {
            // Nothing of it runs here (any more): let it go.
            let this = self.clone();
            tokio::spawn(async move { this.finish(&pod, true).await });
            return;
        }
        if terminal(&pod) {
            return;
        }
        let (stop_tx, stop_rx) = watch::channel(None);
        let pressure = *lock(&self.pressure);
        let admitted = super::admit::under_pressure(&pod, pressure)
            .and_then(|()| super::admit::admit(&pod, &self.worker.allowed_unsafe_sysctls));
        if let Err(r) = admitted {
            // Refused: nothing runs; the pod waits Failed for its deletion.
            let (update, _) = watch::channel(pod.clone());
            handles.insert(
                uid.clone(),
                Handle {
                    stop: stop_tx,
                    update,
                    delete_after: false,
                    finished: true,
                },
            );
            drop(handles);
            let this = self.clone();
            tokio::spawn(async move { this.reject(&pod, r).await });
            return;
        }
        let (update_tx, update_rx) = watch::channel(pod.clone());
        handles.insert(
            uid.clone(),
            Handle {
                stop: stop_tx,
                update: update_tx,
                delete_after: false,
                finished: false,
            },
        );
        drop(handles);
        let this = self.clone();
        tokio::spawn(async move { this.drive(pod, stop_rx, update_rx).await });
    }

    /// Stop a pod now (`grace` None: the pod's own), deleting its API
    /// object (the mirror, for a static pod) once it is down.
    pub fn stop(&self, uid: &str, grace: Option<Duration>) {
        let mut handles = lock(&self.handles);
        if let Some(h) = handles.get_mut(uid) {
            h.delete_after = true;
            let _ = h.stop.send(Some(Stop { grace, evict: None }));
        }
    }

    /// Evict a pod (node pressure): stop it with `grace`; it ends Failed,
    /// reason `Evicted`, with `message`, and its API object stays.
    pub fn evict(&self, uid: &str, grace: Duration, message: String) {
        let handles = lock(&self.handles);
        if let Some(h) = handles.get(uid) {
            let _ = h.stop.send(Some(Stop {
                grace: Some(grace),
                evict: Some(message),
            }));
        }
    }

    /// UIDs of the pods running here.
    pub fn running(&self) -> Vec<String> {
        lock(&self.handles).keys().cloned().collect()
    }

    fn gone(self: &Arc<Self>, pod: &Pod) {
        if is_mirror(pod) {
            return;
        }
        let mut handles = lock(&self.handles);
        let uid = uid_of(pod);
        match handles.get(&uid) {
            Some(h) if h.finished => {
                handles.remove(&uid);
                let (this, pod) = (self.clone(), pod.clone());
                tokio::spawn(async move { this.finish(&pod, false).await });
            }
            Some(h) => {
                tracing::info!(pod = ?key(pod), "pod removed from the API: stopping now");
                let _ = h.stop.send(Some(Stop {
                    grace: Some(Duration::ZERO),
                    evict: None,
                }));
            }
            None => {}
        }
    }

    /// Run one pod through its worker, reporting status as it changes.
    async fn drive(
        self: Arc<Self>,
        pod: Pod,
        stop: watch::Receiver<Option<Stop>>,
        updates: watch::Receiver<Pod>,
    ) {
        let uid = uid_of(&pod);
        let (ns, name) = key(&pod);
        let made = PodWorker::new(
            self.cri.clone(),
            self.worker.clone(),
            pod.clone(),
            self.sources.clone(),
            self.events.clone(),
        );
        let (worker, mut status) = match made {
            Ok((w, st)) => (w.with_updates(updates), st),
            Err(e) => {
                tracing::warn!(pod = %format!("{ns}/{name}"), error = %e, "cannot run pod");
                lock(&self.handles).remove(&uid);
                return;
            }
        };
        self.show(&pod, None);
        let reporter = {
            let this = self.clone();
            let pod = pod.clone();
            tokio::spawn(async move {
                loop {
                    let st = status.borrow_and_update().clone();
                    this.show(&pod, Some(st.clone()));
                    this.patch_status(&pod, &st).await;
                    if status.changed().await.is_err() {
                        return;
                    }
                }
            })
        };
        let last = worker.run(stop).await;
        reporter.abort();
        self.show(&pod, Some(last.clone()));
        self.patch_status(&pod, &last).await;
        let done = matches!(last.phase.as_deref(), Some("Succeeded" | "Failed"));
        let delete = {
            // A pod that finished on its own keeps its (exited) containers
            // and logs until its API object is deleted.
            let mut handles = lock(&self.handles);
            match handles.get_mut(&uid) {
                Some(h) if done && !h.delete_after && h.stop.borrow().is_none() => {
                    h.finished = true;
                    return;
                }
                Some(h) => h.delete_after,
                None => false,
            }
        };
        self.finish(&pod, delete).await;
        lock(&self.handles).remove(&uid);
    }

    /// A pod admission refused: Failed with the reason, and an Event.
    async fn reject(&self, pod: &Pod, r: super::admit::Rejection) {
        let (ns, name) = key(pod);
        tracing::info!(pod = %format!("{ns}/{name}"), reason = r.reason, message = %r.message, "pod refused");
        self.events.emit(crate::events::Event {
            namespace: ns,
            pod: name,
            uid: uid_of(pod),
            field_path: None,
            kind: crate::events::EventType::Warning,
            reason: r.reason,
            message: r.message.clone(),
        });
        let st = PodStatus {
            phase: Some("Failed".into()),
            reason: Some(r.reason.into()),
            message: Some(r.message),
            ..pod.status.clone().unwrap_or_default()
        };
        self.show(pod, Some(st.clone()));
        self.patch_status(pod, &st).await;
    }

    /// Record the pod (and its status) for `/pods`.
    fn show(&self, pod: &Pod, status: Option<PodStatus>) {
        let mut p = pod.clone();
        if status.is_some() {
            p.status = status;
        }
        lock(&self.view).insert(uid_of(pod), p);
    }

    /// Patch `status` (guarded by the pod's UID), retrying transient errors.
    async fn patch_status(&self, pod: &Pod, st: &PodStatus) {
        let (ns, name) = key(pod);
        let api: Api<Pod> = Api::namespaced(self.client.clone(), &ns);
        // A static pod's status goes to its mirror, whose UID is the API's.
        let body = if is_static(pod) {
            serde_json::json!({"status": st})
        } else {
            serde_json::json!({"metadata": {"uid": uid_of(pod)}, "status": st})
        };
        for attempt in 0..5u32 {
            // Strategic: conditions merge by type, so those others set
            // (readiness gates) stay.
            match api
                .patch_status(&name, &PatchParams::default(), &Patch::Strategic(&body))
                .await
            {
                Ok(_) => return,
                // Gone, or a different pod of the same name now.
                Err(e) if matches!(api_code(&e), Some(404 | 409 | 422)) => {
                    tracing::debug!(pod = %format!("{ns}/{name}"), error = %e, "status not patched");
                    return;
                }
                Err(e) => {
                    tracing::warn!(pod = %format!("{ns}/{name}"), attempt, error = %e, "patching status");
                    tokio::time::sleep(Duration::from_millis(200 << attempt)).await;
                }
            }
        }
    }

    /// Stop and remove a pod's sandboxes, then its directory (volumes).
    async fn remove_sandboxes(&self, uid: &str, ids: Vec<String>) {
        for id in ids {
            let _ = self
                .cri
                .stop_pod_sandbox(Request::new(proto::StopPodSandboxRequest {
                    pod_sandbox_id: id.clone(),
                }))
                .await;
            if let Err(s) = self
                .cri
                .remove_pod_sandbox(Request::new(proto::RemovePodSandboxRequest {
                    pod_sandbox_id: id.clone(),
                }))
                .await
            {
                tracing::warn!(sandbox = %id, %uid, error = %s.message(), "removing sandbox");
            }
        }
        if let Err(e) = crate::volumes::remove_pod_dir(&self.worker.pods_root, uid) {
            tracing::warn!(%uid, error = %e, "removing the pod's directory");
        }
    }

    /// The pod is done here: remove its sandboxes and, when it is being
    /// deleted, the API object (grace 0, UID precondition).
    async fn finish(&self, pod: &Pod, delete: bool) {
        let uid = uid_of(pod);
        let (ns, name) = key(pod);
        let filter = proto::PodSandboxFilter {
            label_selector: [(crate::cri::POD_UID_LABEL.to_string(), uid.clone())].into(),
            ..Default::default()
        };
        let ids = self
            .cri
            .list_pod_sandbox(Request::new(proto::ListPodSandboxRequest {
                filter: Some(filter),
            }))
            .await
            .map(|l| l.into_inner().items.into_iter().map(|sb| sb.id).collect())
            .unwrap_or_default();
        self.remove_sandboxes(&uid, ids).await;
        lock(&self.view).remove(&uid);
        if delete {
            let api: Api<Pod> = Api::namespaced(self.client.clone(), &ns);
            let dp = DeleteParams {
                grace_period_seconds: Some(0),
                preconditions: (!is_static(pod)).then_some(Preconditions {
                    uid: Some(uid),
                    resource_version: None,
                }),
                ..Default::default()
            };
            match api.delete(&name, &dp).await {
                Ok(_) => tracing::info!(pod = %format!("{ns}/{name}"), "pod deleted"),
                Err(e) if matches!(api_code(&e), Some(404 | 409)) => {}
                Err(e) => tracing::warn!(pod = %format!("{ns}/{name}"), error = %e, "deleting pod"),
            }
        }
    }
}
