//! ContainerStats, ListContainerStats, PodSandboxStats,
//! ListPodSandboxStats.

use std::collections::HashMap;

use podctl_runtime::SandboxState;

use crate::container_filter;
use crate::container_filter::sandbox_matches;
use crate::error::Result;
use crate::proto;
use crate::records::ContainerRecord;
use crate::service::CriService;
use crate::stats::{self, CgroupSample};

fn u(value: u64) -> Option<proto::UInt64Value> {
    Some(proto::UInt64Value { value })
}

impl CriService {
    /// CPU rate from the previous sample of the same key.
    fn nano_cores(&self, key: &str, now: i64, cpu_ns: u64) -> u64 {
        let mut m = match self.inner.cpu_samples.lock() {
            Ok(m) => m,
            Err(p) => p.into_inner(),
        };
        let prev = m.insert(key.to_string(), (now, cpu_ns));
        match prev {
            Some((t, c)) if now > t && cpu_ns >= c => {
                ((cpu_ns - c) as u128 * 1_000_000_000 / (now - t) as u128) as u64
            }
            _ => 0,
        }
    }

    fn cpu_mem(
        &self,
        key: &str,
        s: &CgroupSample,
        now: i64,
    ) -> (proto::CpuUsage, proto::MemoryUsage) {
        let cpu = proto::CpuUsage {
            timestamp: now,
            usage_core_nano_seconds: u(s.cpu_ns),
            usage_nano_cores: u(self.nano_cores(key, now, s.cpu_ns)),
            psi: None,
        };
        let mem = proto::MemoryUsage {
            timestamp: now,
            working_set_bytes: u(s.working_set),
            available_bytes: u(s
                .memory_limit
                .map(|l| l.saturating_sub(s.working_set))
                .unwrap_or(0)),
            usage_bytes: u(s.memory_usage),
            rss_bytes: u(s.rss),
            page_faults: u(s.page_faults),
            major_page_faults: u(s.major_page_faults),
            psi: None,
        };
        (cpu, mem)
    }

    fn stats_of(
        &self,
        rec: &ContainerRecord,
        pid: Option<i32>,
    ) -> (proto::ContainerStats, CgroupSample) {
        let now = podctl_shim::logfmt::now_ns();
        let sample = pid.and_then(stats::sample_pid).unwrap_or_default();
        let (cpu, memory) = self.cpu_mem(&rec.id, &sample, now);
        let upper = self.config().root.join("containers").join(&rec.id);
        let (bytes, inodes) = stats::dir_usage(&upper.join("upper"));
        let st = proto::ContainerStats {
            attributes: Some(proto::ContainerAttributes {
                id: rec.id.clone(),
                metadata: rec.config.metadata.clone(),
                labels: rec.config.labels.clone(),
                annotations: rec.config.annotations.clone(),
            }),
            cpu: Some(cpu),
            memory: Some(memory),
            writable_layer: Some(proto::FilesystemUsage {
                timestamp: now,
                fs_id: Some(proto::FilesystemIdentifier {
                    mountpoint: upper.display().to_string(),
                }),
                used_bytes: u(bytes),
                inodes_used: u(inodes),
            }),
            swap: None,
            io: None,
        };
        (st, sample)
    }

    pub(crate) async fn container_stats(&self, id: &str) -> Result<proto::ContainerStats> {
        let id = self.container_id(id)?;
        let rec = self.inner.records.container(&id)?;
        let cid = id.clone();
        let st = self
            .blocking(move |i| Ok(i.runtime.container_status(&cid)?))
            .await?;
        Ok(self.stats_of(&rec, st.pid).0)
    }

    pub(crate) async fn list_container_stats(
        &self,
        filter: Option<proto::ContainerStatsFilter>,
    ) -> Result<Vec<proto::ContainerStats>> {
        let all = self.blocking(|i| Ok(i.runtime.list_containers()?)).await?;
        let pids: HashMap<String, Option<i32>> = all.into_iter().map(|s| (s.id, s.pid)).collect();
        let mut out = Vec::new();
        for rec in self.inner.records.containers() {
            let Some(pid) = pids.get(&rec.id) else {
                continue;
            };
            if let Some(f) = &filter {
                if !container_filter::matches(&rec, f.into()) {
                    continue;
                }
            }
            out.push(self.stats_of(&rec, *pid).0);
        }
        Ok(out)
    }

    pub(crate) async fn pod_sandbox_stats(&self, id: &str) -> Result<proto::PodSandboxStats> {
        let id = self.sandbox_id(id)?;
        self.sandbox_stats(&id).await
    }

    async fn sandbox_stats(&self, id: &str) -> Result<proto::PodSandboxStats> {
        let rec = self.inner.records.sandbox(id)?;
        let sid = id.to_string();
        let (st, containers) = self
            .blocking(move |i| {
                let st = i.runtime.sandbox_status(&sid)?;
                let cs = i.runtime.list_containers()?;
                Ok((st, cs))
            })
            .await?;
        let now = podctl_shim::logfmt::now_ns();
        let mut total = CgroupSample::default();
        let mut cstats = Vec::new();
        for c in containers
            .iter()
            .filter(|c| c.sandbox_id.as_deref() == Some(id))
        {
            let Ok(crec) = self.inner.records.container(&c.id) else {
                continue;
            };
            let (s, sample) = self.stats_of(&crec, c.pid);
            total.cpu_ns += sample.cpu_ns;
            total.memory_usage += sample.memory_usage;
            total.working_set += sample.working_set;
            total.rss += sample.rss;
            total.page_faults += sample.page_faults;
            total.major_page_faults += sample.major_page_faults;
            total.processes += sample.processes;
            cstats.push(s);
        }
        let (cpu, memory) = self.cpu_mem(&format!("pod/{id}"), &total, now);
        let network = st
            .pid
            .filter(|_| st.state == SandboxState::Ready)
            .map(|pid| {
                let ifs: Vec<proto::NetworkInterfaceUsage> = stats::net_dev(pid)
                    .into_iter()
                    .map(|(name, v)| proto::NetworkInterfaceUsage {
                        name,
                        rx_bytes: u(v[0]),
                        rx_errors: u(v[1]),
                        tx_bytes: u(v[2]),
                        tx_errors: u(v[3]),
                    })
                    .collect();
                proto::NetworkUsage {
                    timestamp: now,
                    default_interface: ifs.iter().find(|i| i.name == "eth0").cloned(),
                    interfaces: ifs,
                }
            });
        Ok(proto::PodSandboxStats {
            attributes: Some(proto::PodSandboxAttributes {
                id: id.to_string(),
                metadata: rec.config.metadata.clone(),
                labels: rec.config.labels.clone(),
                annotations: rec.config.annotations.clone(),
            }),
            linux: Some(proto::LinuxPodSandboxStats {
                cpu: Some(cpu),
                memory: Some(memory),
                network,
                process: Some(proto::ProcessUsage {
                    timestamp: now,
                    process_count: u(total.processes),
                }),
                containers: cstats,
                io: None,
            }),
            windows: None,
        })
    }

    pub(crate) async fn list_pod_sandbox_stats(
        &self,
        filter: Option<proto::PodSandboxStatsFilter>,
    ) -> Result<Vec<proto::PodSandboxStats>> {
        let mut out = Vec::new();
        for rec in self.inner.records.sandboxes() {
            if let Some(f) = &filter {
                if !sandbox_matches(rec.as_ref(), &f.id, &f.label_selector) {
                    continue;
                }
            }
            match self.sandbox_stats(&rec.id).await {
                Ok(s) => out.push(s),
                Err(e) => tracing::debug!(id = %rec.id, error = %e, "sandbox stats"),
            }
        }
        Ok(out)
    }
}
