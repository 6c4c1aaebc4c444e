//! The CRI calls of today's kubelet beyond the long-standing set, over
//! the socket against real pods: cAdvisor-style metrics
//! (ListMetricDescriptors, ListPodSandboxMetrics), the Stream* calls,
//! UpdatePodSandboxResources, and the ones podctl declines.

mod common;

use std::collections::HashMap;

use common::{
    block_on, channel, container_config, ok, pull, registry_and_daemon, run_container, run_sandbox,
    sandbox_config, Daemon,
};
use podctl_cri::proto;
use podctl_cri::proto::image_service_client::ImageServiceClient;
use podctl_cri::proto::runtime_service_client::RuntimeServiceClient;
use podctl_tests::fixtures::Published;
use tokio_stream::StreamExt;

/// The families critest (cri-tools master) requires of a runtime, less
/// those it lists as not yet implemented anywhere.
const REQUIRED: &[&str] = &[
    "container_blkio_device_usage_total",
    "container_cpu_cfs_periods_total",
    "container_cpu_cfs_throttled_periods_total",
    "container_cpu_cfs_throttled_seconds_total",
    "container_cpu_system_seconds_total",
    "container_cpu_usage_seconds_total",
    "container_cpu_user_seconds_total",
    "container_file_descriptors",
    "container_fs_inodes_free",
    "container_fs_inodes_total",
    "container_fs_limit_bytes",
    "container_fs_reads_bytes_total",
    "container_fs_reads_total",
    "container_fs_usage_bytes",
    "container_fs_writes_bytes_total",
    "container_fs_writes_total",
    "container_last_seen",
    "container_memory_cache",
    "container_memory_failcnt",
    "container_memory_failures_total",
    "container_memory_kernel_usage",
    "container_memory_mapped_file",
    "container_memory_max_usage_bytes",
    "container_memory_rss",
    "container_memory_swap",
    "container_memory_usage_bytes",
    "container_memory_working_set_bytes",
    "container_network_receive_bytes_total",
    "container_network_receive_errors_total",
    "container_network_receive_packets_dropped_total",
    "container_network_receive_packets_total",
    "container_network_transmit_bytes_total",
    "container_network_transmit_errors_total",
    "container_network_transmit_packets_dropped_total",
    "container_network_transmit_packets_total",
    "container_oom_events_total",
    "container_processes",
    "container_sockets",
    "container_spec_cpu_period",
    "container_spec_cpu_shares",
    "container_spec_memory_limit_bytes",
    "container_spec_memory_swap_limit_bytes",
    "container_start_time_seconds",
    "container_threads",
    "container_threads_max",
];

/// Block-I/O families: a writable layer on overlay over tmpfs or a
/// virtual disk may have no device accounting at all.
const MAY_BE_EMPTY: &[&str] = &[
    "container_blkio_device_usage_total",
    "container_fs_reads_bytes_total",
    "container_fs_reads_total",
    "container_fs_writes_bytes_total",
    "container_fs_writes_total",
];

#[test]
fn metrics_streams_and_pod_resources() {
    let (reg, pubd, daemon) = registry_and_daemon();
    block_on(run(&pubd, &daemon));
    drop(reg);
}

async fn run(pubd: &Published, daemon: &Daemon) {
    let ch = channel(&daemon.socket).await;
    let mut rt = RuntimeServiceClient::new(ch.clone());
    let mut img = ImageServiceClient::new(ch);
    let busybox = pull(&mut img, &pubd.busybox).await;

    let pod = sandbox_config("metrics", 0, &daemon.dir.path().join("logs"));
    let sb = run_sandbox(&mut rt, &pod).await;
    let mut cfg = container_config("worker", &busybox, "sleep 3600");
    cfg.linux = Some(proto::LinuxContainerConfig {
        resources: Some(proto::LinuxContainerResources {
            cpu_period: 100_000,
            cpu_quota: 20_000,
            cpu_shares: 512,
            memory_limit_in_bytes: 64 << 20,
            ..Default::default()
        }),
        ..Default::default()
    });
    let c = run_container(&mut rt, &sb, &pod, cfg).await;
    let r = ok(rt
        .exec_sync(proto::ExecSyncRequest {
            container_id: c.clone(),
            cmd: vec![
                "sh".into(),
                "-c".into(),
                "mkdir -p /data && for i in 1 2 3 4 5; do echo hi > /data/f$i; done; sync".into(),
            ],
            timeout: 20,
        })
        .await)
    .into_inner();
    assert_eq!(r.exit_code, 0, "{r:?}");

    // Descriptors: every required family, with help and labels.
    let descs = ok(rt
        .list_metric_descriptors(proto::ListMetricDescriptorsRequest {})
        .await)
    .into_inner()
    .descriptors;
    let by_name: HashMap<&str, &proto::MetricDescriptor> =
        descs.iter().map(|d| (d.name.as_str(), d)).collect();
    for name in REQUIRED {
        let d = by_name
            .get(name)
            .unwrap_or_else(|| panic!("no descriptor for {name}"));
        assert!(!d.help.is_empty() && !d.label_keys.is_empty(), "{d:?}");
    }

    // Samples of this pod: every described family (block I/O may be
    // empty), label values matching the descriptor's keys.
    let all = ok(rt
        .list_pod_sandbox_metrics(proto::ListPodSandboxMetricsRequest {})
        .await)
    .into_inner()
    .pod_metrics;
    let pm = all
        .iter()
        .find(|p| p.pod_sandbox_id == sb)
        .unwrap_or_else(|| panic!("no metrics for pod {sb}: {all:?}"));
    assert_eq!(pm.container_metrics.len(), 1);
    assert_eq!(pm.container_metrics[0].container_id, c);
    let samples: Vec<&proto::Metric> = pm
        .metrics
        .iter()
        .chain(pm.container_metrics.iter().flat_map(|c| c.metrics.iter()))
        .collect();
    for d in &descs {
        let of: Vec<_> = samples.iter().filter(|m| m.name == d.name).collect();
        if of.is_empty() {
            assert!(
                MAY_BE_EMPTY.contains(&d.name.as_str()) || d.name == "container_spec_cpu_quota",
                "no samples of {}",
                d.name
            );
        }
        for m in of {
            assert_eq!(m.label_values.len(), d.label_keys.len(), "{m:?} vs {d:?}");
        }
    }
    let value = |name: &str| -> u64 {
        let m = samples
            .iter()
            .find(|m| m.name == name)
            .unwrap_or_else(|| panic!("no {name}"));
        // container, id, image, namespace, pod
        assert_eq!(m.label_values[3], "default", "{m:?}");
        assert_eq!(m.label_values[4], "metrics", "{m:?}");
        m.value.unwrap_or_default().value
    };
    assert_eq!(value("container_spec_memory_limit_bytes"), 64 << 20);
    assert_eq!(value("container_spec_cpu_quota"), 20_000);
    assert_eq!(value("container_spec_cpu_period"), 100_000);
    assert_eq!(value("container_spec_cpu_shares"), 512);
    assert!(value("container_memory_usage_bytes") > 0);
    assert!(value("container_processes") >= 1);
    assert!(value("container_threads") >= 1);
    assert!(value("container_file_descriptors") >= 1);
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    let started = value("container_start_time_seconds");
    assert!(
        started <= now && now - started < 600,
        "started {started}, now {now}"
    );
    assert!(
        value("container_fs_usage_bytes") > 0,
        "the files written count"
    );
    assert!(value("container_fs_inodes_total") > 0);
    let rx = samples
        .iter()
        .find(|m| m.name == "container_network_receive_packets_total")
        .unwrap_or_else(|| panic!("no network samples"));
    assert_eq!(rx.label_values[0], "POD");
    assert_eq!(rx.label_values[1], sb);
    assert_eq!(rx.label_values[5], "eth0");

    // Stream* answer what List* answers.
    let filter = proto::ContainerFilter {
        pod_sandbox_id: sb.clone(),
        ..Default::default()
    };
    let listed = ok(rt
        .list_containers(proto::ListContainersRequest {
            filter: Some(filter.clone()),
        })
        .await)
    .into_inner()
    .containers;
    let mut streamed = Vec::new();
    let mut s = ok(rt
        .stream_containers(proto::StreamContainersRequest {
            filter: Some(filter),
        })
        .await)
    .into_inner();
    while let Some(m) = s.next().await {
        streamed.extend(ok(m).containers);
    }
    assert_eq!(streamed, listed);
    let mut pods = Vec::new();
    let mut s = ok(rt
        .stream_pod_sandboxes(proto::StreamPodSandboxesRequest { filter: None })
        .await)
    .into_inner();
    while let Some(m) = s.next().await {
        pods.extend(ok(m).pod_sandboxes.into_iter().map(|p| p.id));
    }
    assert_eq!(pods, vec![sb.clone()]);
    let mut images = Vec::new();
    let mut s = ok(img
        .stream_images(proto::StreamImagesRequest { filter: None })
        .await)
    .into_inner();
    while let Some(m) = s.next().await {
        images.extend(ok(m).images.into_iter().map(|i| i.id));
    }
    assert_eq!(images, vec![busybox.clone()]);
    let mut stats = Vec::new();
    let mut s = ok(rt
        .stream_container_stats(proto::StreamContainerStatsRequest { filter: None })
        .await)
    .into_inner();
    while let Some(m) = s.next().await {
        stats.extend(ok(m).container_stats);
    }
    assert_eq!(stats.len(), 1);
    let mut s = ok(rt
        .stream_pod_sandbox_stats(proto::StreamPodSandboxStatsRequest { filter: None })
        .await)
    .into_inner();
    let mut pod_stats = 0;
    while let Some(m) = s.next().await {
        pod_stats += ok(m).pod_sandbox_stats.len();
    }
    assert_eq!(pod_stats, 1);
    let mut s = ok(rt
        .stream_pod_sandbox_metrics(proto::StreamPodSandboxMetricsRequest {})
        .await)
    .into_inner();
    let mut metric_pods = Vec::new();
    while let Some(m) = s.next().await {
        metric_pods.extend(
            ok(m)
                .pod_sandbox_metrics
                .into_iter()
                .map(|p| p.pod_sandbox_id),
        );
    }
    assert_eq!(metric_pods, vec![sb.clone()]);

    // UpdatePodSandboxResources lands on the pod cgroup podctl made
    // (the request named no cgroup parent): containers' sum + overhead.
    ok(rt
        .update_pod_sandbox_resources(proto::UpdatePodSandboxResourcesRequest {
            pod_sandbox_id: sb.clone(),
            overhead: Some(proto::LinuxContainerResources {
                memory_limit_in_bytes: 16 << 20,
                ..Default::default()
            }),
            resources: Some(proto::LinuxContainerResources {
                memory_limit_in_bytes: 128 << 20,
                ..Default::default()
            }),
        })
        .await);
    let v1 = std::path::Path::new("/sys/fs/cgroup/memory/podctl-cri-test").join(&sb);
    let limit = if v1.is_dir() {
        std::fs::read_to_string(v1.join("memory.limit_in_bytes"))
    } else {
        std::fs::read_to_string(
            std::path::Path::new("/sys/fs/cgroup/podctl-cri-test")
                .join(&sb)
                .join("memory.max"),
        )
    };
    assert_eq!(ok(limit).trim(), (144u64 << 20).to_string());
    let missing = rt
        .update_pod_sandbox_resources(proto::UpdatePodSandboxResourcesRequest {
            pod_sandbox_id: "0".repeat(64),
            ..Default::default()
        })
        .await;
    assert_eq!(
        missing.map(|_| ()).map_err(|e| e.code()),
        Err(tonic::Code::NotFound)
    );

    // Declined: checkpoints of whole pods.
    let e = rt
        .checkpoint_pod(proto::CheckpointPodRequest {
            pod_sandbox_id: sb.clone(),
            ..Default::default()
        })
        .await
        .err()
        .map(|e| e.code());
    assert_eq!(e, Some(tonic::Code::Unimplemented));

    ok(rt
        .stop_pod_sandbox(proto::StopPodSandboxRequest {
            pod_sandbox_id: sb.clone(),
        })
        .await);
    let after = ok(rt
        .list_pod_sandbox_metrics(proto::ListPodSandboxMetricsRequest {})
        .await)
    .into_inner()
    .pod_metrics;
    assert!(
        after.iter().all(|p| p.pod_sandbox_id != sb),
        "a stopped pod has no metrics"
    );
    ok(rt
        .remove_pod_sandbox(proto::RemovePodSandboxRequest { pod_sandbox_id: sb })
        .await);
}
