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
