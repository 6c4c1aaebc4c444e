//! ListMetricDescriptors and ListPodSandboxMetrics: cAdvisor's
//! `container_*` metric families, read from the cgroups of each running
//! container (see [`crate::cgroup_detail`]) and, for a pod's network, from
//! its sandbox's network namespace.
//!
//! Every sample carries the labels `container`, `id`, `image`,
//! `namespace` and `pod`, then the family's own labels. The network
//! families are the pod's (`container` is `POD`, `id` the sandbox).
//! Values are integers (the protocol's `UInt64Value`): the `*_seconds*`
//! families are whole seconds, as their names say.

use podctl_runtime::{ContainerState, SandboxState};

use crate::cgroup_detail::{self, Detail};
use crate::error::Result;
use crate::proto;
use crate::records::ContainerRecord;
use crate::service::CriService;

const BASE: [&str; 5] = ["container", "id", "image", "namespace", "pod"];

use proto::MetricType::{Counter, Gauge};

/// Name, help, type and own labels of every family podctl reports.
#[rustfmt::skip]
const FAMILIES: &[(&str, &str, proto::MetricType, &[&str])] = &[
    ("container_blkio_device_usage_total", "Bytes moved per block device and direction", Counter, &["device", "major", "minor", "operation"]),
    ("container_cpu_cfs_periods_total", "CFS enforcement periods that have elapsed", Counter, &[]),
    ("container_cpu_cfs_throttled_periods_total", "CFS periods in which the container was throttled", Counter, &[]),
    ("container_cpu_cfs_throttled_seconds_total", "Time the container spent throttled, in seconds", Counter, &[]),
    ("container_cpu_system_seconds_total", "CPU time spent in the kernel, in seconds", Counter, &[]),
    ("container_cpu_usage_seconds_total", "CPU time consumed, in seconds", Counter, &[]),
    ("container_cpu_user_seconds_total", "CPU time spent in user space, in seconds", Counter, &[]),
    ("container_file_descriptors", "Open file descriptors of the container's processes", Gauge, &[]),
    ("container_fs_inodes_free", "Free inodes of the filesystem holding the writable layer", Gauge, &["device"]),
    ("container_fs_inodes_total", "Inodes of the filesystem holding the writable layer", Gauge, &["device"]),
    ("container_fs_limit_bytes", "Size of the filesystem holding the writable layer", Gauge, &["device"]),
    ("container_fs_reads_bytes_total", "Bytes read from block devices", Counter, &["device"]),
    ("container_fs_reads_total", "Completed block device reads", Counter, &["device"]),
    ("container_fs_usage_bytes", "Bytes used by the writable layer", Gauge, &["device"]),
    ("container_fs_writes_bytes_total", "Bytes written to block devices", Counter, &["device"]),
    ("container_fs_writes_total", "Completed block device writes", Counter, &["device"]),
    ("container_last_seen", "When these metrics were read, in seconds since the epoch", Gauge, &[]),
    ("container_memory_cache", "Page cache charged to the container, in bytes", Gauge, &[]),
    ("container_memory_failcnt", "Times memory usage hit the limit", Counter, &[]),
    ("container_memory_failures_total", "Page faults by type and cgroup scope", Counter, &["failure_type", "scope"]),
    ("container_memory_kernel_usage", "Kernel memory charged to the container, in bytes", Gauge, &[]),
    ("container_memory_mapped_file", "Memory-mapped file pages, in bytes", Gauge, &[]),
    ("container_memory_max_usage_bytes", "Highest memory usage recorded, in bytes", Gauge, &[]),
    ("container_memory_rss", "Anonymous and swap cache memory, in bytes", Gauge, &[]),
    ("container_memory_swap", "Swap used, in bytes", Gauge, &[]),
    ("container_memory_usage_bytes", "Memory usage including page cache, in bytes", Gauge, &[]),
    ("container_memory_working_set_bytes", "Memory usage less inactive file pages, in bytes", Gauge, &[]),
    ("container_network_receive_bytes_total", "Bytes received", Counter, &["interface"]),
    ("container_network_receive_errors_total", "Receive errors", Counter, &["interface"]),
    ("container_network_receive_packets_dropped_total", "Received packets dropped", Counter, &["interface"]),
    ("container_network_receive_packets_total", "Packets received", Counter, &["interface"]),
    ("container_network_transmit_bytes_total", "Bytes sent", Counter, &["interface"]),
    ("container_network_transmit_errors_total", "Transmit errors", Counter, &["interface"]),
    ("container_network_transmit_packets_dropped_total", "Sent packets dropped", Counter, &["interface"]),
    ("container_network_transmit_packets_total", "Packets sent", Counter, &["interface"]),
    ("container_oom_events_total", "Processes killed by the OOM killer", Counter, &[]),
    ("container_processes", "Processes in the container", Gauge, &[]),
    ("container_sockets", "Open sockets of the container's processes", Gauge, &[]),
    ("container_spec_cpu_period", "CFS period of the container, in microseconds", Gauge, &[]),
    ("container_spec_cpu_quota", "CFS quota of the container, in microseconds (only when set)", Gauge, &[]),
    ("container_spec_cpu_shares", "CPU shares of the container", Gauge, &[]),
    ("container_spec_memory_limit_bytes", "Memory limit of the container, 0 when unlimited", Gauge, &[]),
    ("container_spec_memory_swap_limit_bytes", "Memory plus swap limit of the container, 0 when unlimited", Gauge, &[]),
    ("container_start_time_seconds", "When the container started, in seconds since the epoch", Gauge, &[]),
    ("container_threads", "Threads in the container", Gauge, &[]),
    ("container_threads_max", "Task limit of the container, 0 when unlimited", Gauge, &[]),
];

/// The families of [`FAMILIES`] as descriptors.
pub(crate) fn descriptors() -> Vec<proto::MetricDescriptor> {
    FAMILIES
        .iter()
        .map(|(name, help, _, own)| proto::MetricDescriptor {
            name: (*name).into(),
            help: (*help).into(),
            label_keys: BASE
                .iter()
                .chain(own.iter())
                .map(|s| s.to_string())
                .collect(),
        })
        .collect()
}

/// Samples of one object, all sharing its base label values.
struct Samples {
    base: Vec<String>,
    now: i64,
    out: Vec<proto::Metric>,
}

impl Samples {
    fn new(base: Vec<String>, now: i64) -> Self {
        Samples {
            base,
            now,
            out: Vec::new(),
        }
    }

    fn add(&mut self, name: &str, own: &[&str], value: u64) {
        let Some((_, _, kind, keys)) = FAMILIES.iter().find(|f| f.0 == name) else {
            tracing::error!(name, "metric family missing from the table");
            return;
        };
        debug_assert_eq!(keys.len(), own.len(), "{name}");
        self.out.push(proto::Metric {
            name: name.into(),
            timestamp: self.now,
            metric_type: *kind as i32,
            label_values: self
                .base
                .iter()
                .cloned()
                .chain(own.iter().map(|s| s.to_string()))
                .collect(),
            value: Some(proto::UInt64Value { value }),
        });
    }
}

const NS: u64 = 1_000_000_000;

/// The cgroup families of one container.
fn container_samples(s: &mut Samples, d: &Detail) {
    s.add("container_cpu_usage_seconds_total", &[], d.cpu_ns / NS);
    s.add("container_cpu_user_seconds_total", &[], d.cpu_user_ns / NS);
    s.add(
        "container_cpu_system_seconds_total",
        &[],
        d.cpu_system_ns / NS,
    );
    s.add("container_cpu_cfs_periods_total", &[], d.cfs_periods);
    s.add(
        "container_cpu_cfs_throttled_periods_total",
        &[],
        d.cfs_throttled_periods,
    );
    s.add(
        "container_cpu_cfs_throttled_seconds_total",
        &[],
        d.cfs_throttled_ns / NS,
    );
    s.add("container_memory_usage_bytes", &[], d.memory_usage);
    s.add("container_memory_max_usage_bytes", &[], d.memory_max_usage);
    s.add("container_memory_working_set_bytes", &[], d.working_set);
    s.add("container_memory_rss", &[], d.rss);
    s.add("container_memory_cache", &[], d.cache);
    s.add("container_memory_mapped_file", &[], d.mapped_file);
    s.add("container_memory_kernel_usage", &[], d.kernel);
    s.add("container_memory_swap", &[], d.swap);
    s.add("container_memory_failcnt", &[], d.failcnt);
    for scope in ["container", "hierarchy"] {
        s.add(
            "container_memory_failures_total",
            &["pgfault", scope],
            d.page_faults,
        );
        s.add(
            "container_memory_failures_total",
            &["pgmajfault", scope],
            d.major_page_faults,
        );
    }
    s.add("container_oom_events_total", &[], d.oom_events);
    s.add("container_processes", &[], d.processes);
    s.add("container_threads", &[], d.threads);
    s.add("container_threads_max", &[], d.threads_max);
    s.add("container_file_descriptors", &[], d.file_descriptors);
    s.add("container_sockets", &[], d.sockets);
    for io in &d.io {
        let dev = format!("{}:{}", io.major, io.minor);
        let (maj, min) = (io.major.to_string(), io.minor.to_string());
        s.add(
            "container_blkio_device_usage_total",
            &[&dev, &maj, &min, "Read"],
            io.read_bytes,
        );
        s.add(
            "container_blkio_device_usage_total",
            &[&dev, &maj, &min, "Write"],
            io.write_bytes,
        );
        s.add("container_fs_reads_bytes_total", &[&dev], io.read_bytes);
        s.add("container_fs_writes_bytes_total", &[&dev], io.write_bytes);
        s.add("container_fs_reads_total", &[&dev], io.reads);
        s.add("container_fs_writes_total", &[&dev], io.writes);
    }
}

/// The configured limits of a container.
fn spec_samples(s: &mut Samples, r: Option<&proto::LinuxContainerResources>) {
    let r = r.cloned().unwrap_or_default();
    let pos = |v: i64| u64::try_from(v).unwrap_or(0);
    s.add(
        "container_spec_cpu_period",
        &[],
        if r.cpu_period > 0 {
            pos(r.cpu_period)
        } else {
            100_000
        },
    );
    if r.cpu_quota > 0 {
        s.add("container_spec_cpu_quota", &[], pos(r.cpu_quota));
    }
    s.add(
        "container_spec_cpu_shares",
        &[],
        if r.cpu_shares > 0 {
            pos(r.cpu_shares)
        } else {
            1024
        },
    );
    s.add(
        "container_spec_memory_limit_bytes",
        &[],
        pos(r.memory_limit_in_bytes),
    );
    s.add(
        "container_spec_memory_swap_limit_bytes",
        &[],
        pos(r.memory_swap_limit_in_bytes),
    );
}

/// Usage and size of the filesystem holding `dir`.
fn fs_samples(s: &mut Samples, dir: &std::path::Path) {
    let (used, _) = crate::stats::dir_usage(&dir.join("upper"));
    let dev = std::os::unix::fs::MetadataExt::dev(&match std::fs::metadata(dir) {
        Ok(m) => m,
        Err(_) => return,
    });
    let device = format!(
        "{}:{}",
        nix::sys::stat::major(dev),
        nix::sys::stat::minor(dev)
    );
    s.add("container_fs_usage_bytes", &[&device], used);
    if let Ok(v) = nix::sys::statvfs::statvfs(dir) {
        let frag = v.fragment_size();
        s.add(
            "container_fs_limit_bytes",
            &[&device],
            v.blocks().saturating_mul(frag),
        );
        s.add("container_fs_inodes_total", &[&device], v.files());
        s.add("container_fs_inodes_free", &[&device], v.files_free());
    }
}

impl CriService {
    /// The metrics of every ready sandbox and its running containers.
    pub(crate) async fn pod_sandbox_metrics(&self) -> Result<Vec<proto::PodSandboxMetrics>> {
        let svc = self.clone();
        self.blocking(move |i| {
            let sandboxes = i.runtime.list_sandboxes()?;
            let containers = i.runtime.list_containers()?;
            let now = podctl_shim::logfmt::now_ns();
            let now_s = u64::try_from(now).unwrap_or(0) / NS;
            let mut out = Vec::new();
            for sb in sandboxes.iter().filter(|s| s.state == SandboxState::Ready) {
                let Ok(rec) = i.records.sandbox(&sb.id) else {
                    continue;
                };
                let meta = rec.config.metadata.clone().unwrap_or_default();
                let base = |container: &str, id: &str, image: &str| {
                    vec![
                        container.to_string(),
                        id.to_string(),
                        image.to_string(),
                        meta.namespace.clone(),
                        meta.name.clone(),
                    ]
                };
                let mut pod = Samples::new(base("POD", &sb.id, &svc.config().sandbox_image), now);
                if let Some(pid) = sb.pid {
                    for (ifname, v) in cgroup_detail::net_counters(pid) {
                        let names = [
                            "container_network_receive_bytes_total",
                            "container_network_receive_packets_total",
                            "container_network_receive_errors_total",
                            "container_network_receive_packets_dropped_total",
                            "container_network_transmit_bytes_total",
                            "container_network_transmit_packets_total",
                            "container_network_transmit_errors_total",
                            "container_network_transmit_packets_dropped_total",
                        ];
                        for (name, value) in names.iter().zip(v) {
                            pod.add(name, &[&ifname], value);
                        }
                    }
                }
                let mut cms = Vec::new();
                for c in containers.iter().filter(|c| {
                    c.sandbox_id.as_deref() == Some(sb.id.as_str())
                        && c.state == ContainerState::Running
                }) {
                    let (Some(pid), Ok(crec)) = (c.pid, i.records.container(&c.id)) else {
                        continue;
                    };
                    let Some(d) = cgroup_detail::detail(pid) else {
                        continue;
                    };
                    cms.push(svc.container_metrics(&crec, &d, &base, now, now_s, c.started_at_ns));
                }
                out.push(proto::PodSandboxMetrics {
                    pod_sandbox_id: sb.id.clone(),
                    metrics: pod.out,
                    container_metrics: cms,
                });
            }
            Ok(out)
        })
        .await
    }

    fn container_metrics(
        &self,
        rec: &ContainerRecord,
        d: &Detail,
        base: &dyn Fn(&str, &str, &str) -> Vec<String>,
        now: i64,
        now_s: u64,
        started_at_ns: i64,
    ) -> proto::ContainerMetrics {
        let name = rec
            .config
            .metadata
            .as_ref()
            .map(|m| m.name.clone())
            .unwrap_or_default();
        let image = rec
            .config
            .image
            .as_ref()
            .map(|i| i.image.clone())
            .unwrap_or_default();
        let mut s = Samples::new(base(&name, &rec.id, &image), now);
        container_samples(&mut s, d);
        spec_samples(&mut s, rec.resources.as_ref());
        fs_samples(&mut s, &self.config().root.join("containers").join(&rec.id));
        s.add("container_last_seen", &[], now_s);
        s.add(
            "container_start_time_seconds",
            &[],
            u64::try_from(started_at_ns).unwrap_or(0) / NS,
        );
        proto::ContainerMetrics {
            container_id: rec.id.clone(),
            metrics: s.out,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_sample_matches_its_descriptor() {
        let d = Detail {
            io: vec![cgroup_detail::DeviceIo {
                major: 8,
                ..Default::default()
            }],
            ..Default::default()
        };
        let mut s = Samples::new(BASE.iter().map(|s| s.to_string()).collect(), 1);
        container_samples(&mut s, &d);
        spec_samples(&mut s, None);
        let descs = descriptors();
        for m in &s.out {
            let desc = descs
                .iter()
                .find(|x| x.name == m.name)
                .unwrap_or_else(|| panic!("{} has no descriptor", m.name));
            assert_eq!(desc.label_keys.len(), m.label_values.len(), "{}", m.name);
        }
        for d in &descs {
            assert!(!d.help.is_empty() && d.label_keys.len() >= BASE.len());
        }
    }
}
