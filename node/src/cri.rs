//! The CRI service the engine drives: anything implementing both CRI
//! service traits — podctl's own `CriService` in process, or a client
//! adapter for another runtime. One code path either way.

use podctl_cri::proto;
use podctl_cri::proto::image_service_server::ImageService;
use podctl_cri::proto::runtime_service_server::RuntimeService;
use tonic::Request;

use crate::error::{CriContext, Result};

pub trait Cri: RuntimeService + ImageService + Clone + Send + Sync + 'static {}
impl<T: RuntimeService + ImageService + Clone + Send + Sync + 'static> Cri for T {}

/// ContainerStatus, `None` when the container is gone.
pub async fn container_status<C: Cri>(cri: &C, id: &str) -> Result<Option<proto::ContainerStatus>> {
    match cri
        .container_status(Request::new(proto::ContainerStatusRequest {
            container_id: id.into(),
            verbose: false,
        }))
        .await
    {
        Err(s) if s.code() == tonic::Code::NotFound => Ok(None),
        r => Ok(r.cri("ContainerStatus")?.status),
    }
}

/// Containers of one sandbox.
pub async fn containers_of<C: Cri>(cri: &C, sandbox: &str) -> Result<Vec<proto::Container>> {
    Ok(RuntimeService::list_containers(
        cri,
        Request::new(proto::ListContainersRequest {
            filter: Some(proto::ContainerFilter {
                pod_sandbox_id: sandbox.into(),
                ..Default::default()
            }),
        }),
    )
    .await
    .cri("ListContainers")?
    .containers)
}

/// One container's usage, from ListContainerStats.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ContainerUsage {
    pub id: String,
    pub name: String,
    pub cpu_nanos: u64,
    pub memory_working_set: u64,
    pub writable_layer: u64,
}

/// Every container's usage, keyed by the UID of its pod (the
/// `io.kubernetes.pod.uid` label the engine puts on each container):
/// the one reading that `/stats/summary` and the eviction manager share.
/// Empty when the runtime cannot answer.
pub async fn usage_by_pod<C: Cri>(
    cri: &C,
) -> std::collections::BTreeMap<String, Vec<ContainerUsage>> {
    let stats = cri
        .list_container_stats(Request::new(proto::ListContainerStatsRequest {
            filter: None,
        }))
        .await
        .map(|r| r.into_inner().stats)
        .unwrap_or_default();
    let mut by_pod: std::collections::BTreeMap<String, Vec<ContainerUsage>> = Default::default();
    for s in stats {
        let Some(attr) = s.attributes else { continue };
        let Some(uid) = attr.labels.get(POD_UID_LABEL) else {
            continue;
        };
        let value = |v: Option<&proto::UInt64Value>| v.map_or(0, |v| v.value);
        by_pod.entry(uid.clone()).or_default().push(ContainerUsage {
            id: attr.id.clone(),
            name: attr.metadata.map(|m| m.name).unwrap_or_default(),
            cpu_nanos: value(
                s.cpu
                    .as_ref()
                    .and_then(|c| c.usage_core_nano_seconds.as_ref()),
            ),
            memory_working_set: value(s.memory.as_ref().and_then(|m| m.working_set_bytes.as_ref())),
            writable_layer: value(
                s.writable_layer
                    .as_ref()
                    .and_then(|w| w.used_bytes.as_ref()),
            ),
        });
    }
    by_pod
}

/// The label naming a container's pod UID.
pub const POD_UID_LABEL: &str = "io.kubernetes.pod.uid";
