//! Node-pressure eviction, as the kubelet does it.
//!
//! Every `interval` the manager measures the signals ([`observe`]): the
//! machine's available memory, allocatable memory left to the pods, free
//! space and inodes of the root dir's filesystem, PIDs left. A hard
//! threshold below which a signal falls is met at once, a soft one after
//! it stayed met for its grace period. While one is met the node reports
//! the matching pressure condition (and for
//! `--eviction-pressure-transition-period` after), admission refuses
//! BestEffort pods under memory pressure and every pod under disk
//! pressure, and one pod per round is evicted: first unused images are
//! removed when disk is short, then the pods are ranked ([`rank`]) and the
//! first is stopped — at once for a hard threshold, with its grace period
//! (at most `--eviction-max-pod-grace-period`) for a soft one — and ends
//! `Failed` with reason `Evicted`, a message naming the resource, and a
//! Warning Event. Critical pods (static, mirror, or of system-critical
//! priority) are never evicted.

pub mod observe;
pub mod rank;
pub mod thresholds;

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use k8s_openapi::api::core::v1::Pod;
use podctl_cri::proto;
use tonic::Request;

use crate::agent::node_status::Machine;
use crate::agent::pods::{lock, PodManager};
use crate::cri::Cri;
use observe::Observed;
use rank::Usage;
use thresholds::{Resource, Signal, Threshold};

/// The eviction manager's settings (the kubelet's `--eviction-*` flags).
#[derive(Clone, Debug)]
pub struct EvictionConfig {
    pub thresholds: Vec<Threshold>,
    /// Longest grace period a soft eviction gives (zero: the pod's own).
    pub max_pod_grace: Duration,
    /// How long a pressure condition stays after its threshold was last met.
    pub transition: Duration,
    /// Between rounds.
    pub interval: Duration,
    /// Node allocatable memory (capacity less reserved), for
    /// `allocatableMemory.available`; 0 when unknown.
    pub allocatable_memory: u64,
}

impl Default for EvictionConfig {
    fn default() -> Self {
        EvictionConfig {
            thresholds: thresholds::build(None, "", "").unwrap_or_default(),
            max_pod_grace: Duration::ZERO,
            transition: Duration::from_secs(300),
            interval: Duration::from_secs(10),
            allocatable_memory: 0,
        }
    }
}

impl EvictionConfig {
    /// The hard threshold's level for `signal`, given the capacity.
    pub fn hard_reserve(&self, signal: Signal, capacity: u64) -> u64 {
        self.thresholds
            .iter()
            .find(|t| t.signal == signal && t.grace.is_none())
            .map_or(0, |t| t.limit(capacity))
    }
}

/// The node's pressure conditions.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Pressure {
    pub memory: bool,
    pub disk: bool,
    pub pids: bool,
}

/// Shared between the eviction manager, admission and the node status.
pub type SharedPressure = Arc<Mutex<Pressure>>;

/// A pod evicted in a round.
#[derive(Clone, Debug, PartialEq)]
pub struct Evicted {
    pub uid: String,
    pub resource: Resource,
    pub message: String,
}

#[derive(Default)]
struct Tracking {
    /// When each soft threshold's signal first fell below it, this spell.
    first_met: HashMap<Signal, Instant>,
    /// When a signal of each resource was last below a threshold.
    last_met: Vec<(Resource, Instant)>,
    /// Pods already evicted (their stop is under way).
    evicted: BTreeSet<String>,
}

pub struct EvictionManager {
    cfg: EvictionConfig,
    root: PathBuf,
    pub pressure: SharedPressure,
    tracking: Mutex<Tracking>,
}

fn resource_name(r: Resource) -> &'static str {
    match r {
        Resource::Memory => "memory",
        Resource::Disk => "ephemeral-storage",
        Resource::Pids => "pids",
    }
}

fn candidate(p: &Pod) -> bool {
    let phase = p.status.as_ref().and_then(|s| s.phase.as_deref());
    !matches!(phase, Some("Succeeded" | "Failed"))
        && p.metadata.deletion_timestamp.is_none()
        && !crate::agent::pods::is_critical(p)
}

impl EvictionManager {
    /// `root`: the directory whose filesystem holds images and layers.
    pub fn new(cfg: EvictionConfig, root: PathBuf, pressure: SharedPressure) -> Self {
        EvictionManager {
            cfg,
            root,
            pressure,
            tracking: Mutex::new(Tracking::default()),
        }
    }

    /// The thresholds met now (soft ones past their grace), first the
    /// memory ones; updates the soft thresholds' clocks. A signal below any
    /// threshold, soft ones within their grace too, marks its resource
    /// under pressure (the kubelet's conditions do not wait for the grace).
    fn met(&self, obs: &Observed, now: Instant) -> Vec<Threshold> {
        let mut t = lock(&self.tracking);
        let mut met = Vec::new();
        let mut pressed = Vec::new();
        for th in &self.cfg.thresholds {
            let Some(&(avail, cap)) = obs.signals.get(&th.signal) else {
                continue;
            };
            let below = avail < th.limit(cap);
            if below {
                pressed.push(th.signal.resource());
            }
            match th.grace {
                None if below => met.push(th.clone()),
                None => {}
                Some(grace) => {
                    if !below {
                        t.first_met.remove(&th.signal);
                        continue;
                    }
                    let since = *t.first_met.entry(th.signal).or_insert(now);
                    if now.duration_since(since) >= grace {
                        met.push(th.clone());
                    }
                }
            }
        }
        for r in pressed {
            t.last_met.retain(|(x, _)| *x != r);
            t.last_met.push((r, now));
        }
        met.sort_by_key(|th| th.signal.resource() != Resource::Memory);
        met
    }

    /// Pressure: a threshold of the resource met within the transition period.
    fn update_pressure(&self, now: Instant) {
        let t = lock(&self.tracking);
        let on = |r: Resource| {
            t.last_met
                .iter()
                .any(|(x, at)| *x == r && now.duration_since(*at) <= self.cfg.transition)
        };
        let p = Pressure {
            memory: on(Resource::Memory),
            disk: on(Resource::Disk),
            pids: on(Resource::Pids),
        };
        let mut cur = lock(&self.pressure);
        if *cur != p {
            tracing::info!(?p, "node pressure changed");
        }
        *cur = p;
    }

    /// Measure: the machine and what each pod uses (keyed by UID).
    async fn measure<C: Cri>(&self, cri: &C) -> (Observed, BTreeMap<String, Usage>) {
        let used: BTreeMap<String, Usage> = crate::cri::usage_by_pod(cri)
            .await
            .into_iter()
            .map(|(uid, cs)| {
                let u = Usage {
                    memory: cs.iter().map(|c| c.memory_working_set).sum(),
                    disk: cs.iter().map(|c| c.writable_layer).sum(),
                    ..Default::default()
                };
                (uid, u)
            })
            .collect();
        let pods_memory = used.values().map(|u| u.memory).sum();
        let m = Machine::read(&self.root);
        let obs = observe::observe(&m, pods_memory, self.cfg.allocatable_memory);
        (obs, used)
    }

    /// One round: measure, decide, act. The pod evicted, if one was.
    pub async fn round<C: Cri>(&self, pods: &PodManager<C>) -> Option<Evicted> {
        let (mut obs, mut used) = self.measure(&pods.cri).await;
        let now = Instant::now();
        let mut met = self.met(&obs, now);
        self.update_pressure(now);
        if met.is_empty() {
            return None;
        }
        if met[0].signal.resource() == Resource::Disk && self.remove_unused_images(pods).await > 0 {
            // Images first; evict only if that was not enough.
            (obs, used) = self.measure(&pods.cri).await;
            met = self.met(&obs, Instant::now());
            if met.is_empty() {
                return None;
            }
        }
        let th = met[0].clone();
        let resource = th.signal.resource();
        let view: Vec<Pod> = lock(&pods.view).values().cloned().collect();
        let evicted = lock(&self.tracking).evicted.clone();
        let ranked = rank::rank(
            view.iter()
                .filter(|p| candidate(p))
                .map(|p| {
                    let mut u = rank::usage_of(p);
                    if let Some(x) = used.get(&u.uid) {
                        (u.memory, u.disk) = (x.memory, x.disk);
                    }
                    u
                })
                .filter(|u| !evicted.contains(&u.uid))
                .collect(),
            resource,
        );
        let victim = ranked.first()?;
        let pod = view
            .iter()
            .find(|p| p.metadata.uid.as_deref() == Some(&victim.uid))?;
        let (avail, cap) = obs.signals.get(&th.signal).copied().unwrap_or_default();
        let message = message(&th, cap, avail, victim, resource);
        let grace = match th.grace {
            None => Duration::ZERO,
            Some(_) => {
                let own = pod
                    .spec
                    .as_ref()
                    .and_then(|s| s.termination_grace_period_seconds)
                    .map_or(Duration::from_secs(30), |s| {
                        Duration::from_secs(s.max(0) as u64)
                    });
                if self.cfg.max_pod_grace.is_zero() {
                    own
                } else {
                    own.min(self.cfg.max_pod_grace)
                }
            }
        };
        tracing::warn!(pod = ?pod.metadata.name, threshold = %th.describe(), %message, "evicting");
        lock(&self.tracking).evicted.insert(victim.uid.clone());
        pods.evict(&victim.uid, grace, message.clone());
        Some(Evicted {
            uid: victim.uid.clone(),
            resource,
            message,
        })
    }

    /// Remove images no container uses; how many went.
    async fn remove_unused_images<C: Cri>(&self, pods: &PodManager<C>) -> usize {
        let cri = &pods.cri;
        let Ok(containers) = cri
            .list_containers(Request::new(proto::ListContainersRequest { filter: None }))
            .await
        else {
            return 0;
        };
        let in_use: BTreeSet<String> = containers
            .into_inner()
            .containers
            .into_iter()
            .flat_map(|c| [c.image_ref, c.image.map(|i| i.image).unwrap_or_default()])
            .collect();
        let Ok(images) = cri
            .list_images(Request::new(proto::ListImagesRequest { filter: None }))
            .await
        else {
            return 0;
        };
        let mut removed = 0;
        for img in images.into_inner().images {
            let used = in_use.contains(&img.id)
                || img.repo_tags.iter().any(|t| in_use.contains(t))
                || img.repo_digests.iter().any(|d| in_use.contains(d))
                || img.pinned;
            if used {
                continue;
            }
            let req = proto::RemoveImageRequest {
                image: Some(proto::ImageSpec {
                    image: img.id.clone(),
                    ..Default::default()
                }),
            };
            match cri.remove_image(Request::new(req)).await {
                Ok(_) => {
                    tracing::info!(image = %img.id, "disk pressure: removed an unused image");
                    removed += 1;
                }
                Err(e) => tracing::warn!(image = %img.id, error = %e.message(), "removing image"),
            }
        }
        removed
    }

    /// Forget evicted pods that are gone from the view.
    fn forget_gone<C: Cri>(&self, pods: &PodManager<C>) {
        let view = lock(&pods.view);
        lock(&self.tracking)
            .evicted
            .retain(|uid| view.get(uid).is_some_and(candidate));
    }

    /// Rounds every `interval`, for ever. After an eviction the next
    /// round waits until that pod is down (at most 30 s, as the kubelet's
    /// pod cleanup wait), so one shortage does not take several pods.
    pub async fn run<C: Cri>(self: Arc<Self>, pods: Arc<PodManager<C>>) {
        let mut tick = tokio::time::interval(self.cfg.interval);
        loop {
            tick.tick().await;
            self.forget_gone(&pods);
            let Some(ev) = self.round(&pods).await else {
                continue;
            };
            let deadline = Instant::now() + Duration::from_secs(30);
            while Instant::now() < deadline {
                let down = lock(&pods.view).get(&ev.uid).is_none_or(|p| !candidate(p));
                if down {
                    break;
                }
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
            tick.reset();
        }
    }
}

/// The kubelet's wording: the resource, the threshold, what is left, and
/// what the pod used against its request.
fn message(th: &Threshold, cap: u64, avail: u64, u: &Usage, r: Resource) -> String {
    let name = resource_name(r);
    let q = |v: u64| match r {
        Resource::Pids => v.to_string(),
        _ => thresholds::bytes(v),
    };
    let (used, request) = match r {
        Resource::Memory => (u.memory, u.memory_request),
        Resource::Disk => (u.disk, u.disk_request),
        Resource::Pids => (u.processes, 0),
    };
    format!(
        "The node was low on resource: {name}. Threshold quantity: {}, available: {}. \
         The pod was using {}, request is {}, has larger consumption of {name}.",
        q(th.limit(cap)),
        q(avail),
        q(used),
        q(request),
    )
}

#[cfg(test)]
mod tests;
