//! The gRPC RuntimeService: request validation and translation to the
//! service's methods. In-process callers use this same trait.

use std::pin::Pin;

use tokio_stream::wrappers::BroadcastStream;
use tokio_stream::{Stream, StreamExt};
use tonic::{Request, Response, Status};

use crate::proto;
use crate::proto::runtime_service_server::RuntimeService;
use crate::service::CriService;
use crate::spec::resources_of;
use crate::streams::{chunked, Chunks};

type R<T> = Result<Response<T>, Status>;

/// The runtime API version this service speaks.
pub const RUNTIME_API_VERSION: &str = "v1";
/// The name reported by Version.
pub const RUNTIME_NAME: &str = "podctl";

#[tonic::async_trait]
impl RuntimeService for CriService {
    async fn version(&self, _req: Request<proto::VersionRequest>) -> R<proto::VersionResponse> {
        Ok(Response::new(proto::VersionResponse {
            version: "0.1.0".into(),
            runtime_name: RUNTIME_NAME.into(),
            runtime_version: env!("CARGO_PKG_VERSION").into(),
            runtime_api_version: RUNTIME_API_VERSION.into(),
        }))
    }

    async fn run_pod_sandbox(
        &self,
        req: Request<proto::RunPodSandboxRequest>,
    ) -> R<proto::RunPodSandboxResponse> {
        let r = req.into_inner();
        let id = self.run_sandbox(r.config, r.runtime_handler).await?;
        Ok(Response::new(proto::RunPodSandboxResponse {
            pod_sandbox_id: id,
        }))
    }

    async fn stop_pod_sandbox(
        &self,
        req: Request<proto::StopPodSandboxRequest>,
    ) -> R<proto::StopPodSandboxResponse> {
        self.stop_sandbox(&req.into_inner().pod_sandbox_id).await?;
        Ok(Response::new(proto::StopPodSandboxResponse {}))
    }

    async fn remove_pod_sandbox(
        &self,
        req: Request<proto::RemovePodSandboxRequest>,
    ) -> R<proto::RemovePodSandboxResponse> {
        self.remove_sandbox(&req.into_inner().pod_sandbox_id)
            .await?;
        Ok(Response::new(proto::RemovePodSandboxResponse {}))
    }

    async fn pod_sandbox_status(
        &self,
        req: Request<proto::PodSandboxStatusRequest>,
    ) -> R<proto::PodSandboxStatusResponse> {
        let r = req.into_inner();
        Ok(Response::new(
            self.sandbox_status(&r.pod_sandbox_id, r.verbose).await?,
        ))
    }

    async fn list_pod_sandbox(
        &self,
        req: Request<proto::ListPodSandboxRequest>,
    ) -> R<proto::ListPodSandboxResponse> {
        let items = self.list_sandboxes(req.into_inner().filter).await?;
        Ok(Response::new(proto::ListPodSandboxResponse { items }))
    }

    async fn create_container(
        &self,
        req: Request<proto::CreateContainerRequest>,
    ) -> R<proto::CreateContainerResponse> {
        let r = req.into_inner();
        let id = CriService::create_container(self, &r.pod_sandbox_id, r.config, r.sandbox_config)
            .await?;
        Ok(Response::new(proto::CreateContainerResponse {
            container_id: id,
        }))
    }

    async fn start_container(
        &self,
        req: Request<proto::StartContainerRequest>,
    ) -> R<proto::StartContainerResponse> {
        CriService::start_container(self, &req.into_inner().container_id).await?;
        Ok(Response::new(proto::StartContainerResponse {}))
    }

    async fn stop_container(
        &self,
        req: Request<proto::StopContainerRequest>,
    ) -> R<proto::StopContainerResponse> {
        let r = req.into_inner();
        CriService::stop_container(self, &r.container_id, r.timeout).await?;
        Ok(Response::new(proto::StopContainerResponse {}))
    }

    async fn remove_container(
        &self,
        req: Request<proto::RemoveContainerRequest>,
    ) -> R<proto::RemoveContainerResponse> {
        CriService::remove_container(self, &req.into_inner().container_id).await?;
        Ok(Response::new(proto::RemoveContainerResponse {}))
    }

    async fn list_containers(
        &self,
        req: Request<proto::ListContainersRequest>,
    ) -> R<proto::ListContainersResponse> {
        let containers = CriService::list_containers(self, req.into_inner().filter).await?;
        Ok(Response::new(proto::ListContainersResponse { containers }))
    }

    async fn container_status(
        &self,
        req: Request<proto::ContainerStatusRequest>,
    ) -> R<proto::ContainerStatusResponse> {
        let r = req.into_inner();
        Ok(Response::new(
            CriService::container_status(self, &r.container_id, r.verbose).await?,
        ))
    }

    async fn update_container_resources(
        &self,
        req: Request<proto::UpdateContainerResourcesRequest>,
    ) -> R<proto::UpdateContainerResourcesResponse> {
        let r = req.into_inner();
        if let Some(lin) = r.linux {
            self.update_resources(&r.container_id, lin).await?;
        }
        Ok(Response::new(proto::UpdateContainerResourcesResponse {}))
    }

    async fn reopen_container_log(
        &self,
        req: Request<proto::ReopenContainerLogRequest>,
    ) -> R<proto::ReopenContainerLogResponse> {
        CriService::reopen_container_log(self, &req.into_inner().container_id).await?;
        Ok(Response::new(proto::ReopenContainerLogResponse {}))
    }

    async fn exec_sync(&self, req: Request<proto::ExecSyncRequest>) -> R<proto::ExecSyncResponse> {
        let r = req.into_inner();
        Ok(Response::new(
            CriService::exec_sync(self, &r.container_id, r.cmd, r.timeout).await?,
        ))
    }

    async fn exec(&self, req: Request<proto::ExecRequest>) -> R<proto::ExecResponse> {
        let mut r = req.into_inner();
        r.container_id = self.container_id(&r.container_id)?;
        self.require_running(&r.container_id).await?;
        Ok(Response::new(self.stream()?.get_exec(&r)?))
    }

    async fn attach(&self, req: Request<proto::AttachRequest>) -> R<proto::AttachResponse> {
        let mut r = req.into_inner();
        r.container_id = self.container_id(&r.container_id)?;
        self.require_running(&r.container_id).await?;
        Ok(Response::new(self.stream()?.get_attach(&r)?))
    }

    async fn port_forward(
        &self,
        req: Request<proto::PortForwardRequest>,
    ) -> R<proto::PortForwardResponse> {
        let mut r = req.into_inner();
        r.pod_sandbox_id = self.sandbox_id(&r.pod_sandbox_id)?;
        Ok(Response::new(self.stream()?.get_port_forward(&r)?))
    }

    async fn container_stats(
        &self,
        req: Request<proto::ContainerStatsRequest>,
    ) -> R<proto::ContainerStatsResponse> {
        let stats = CriService::container_stats(self, &req.into_inner().container_id).await?;
        Ok(Response::new(proto::ContainerStatsResponse {
            stats: Some(stats),
        }))
    }

    async fn list_container_stats(
        &self,
        req: Request<proto::ListContainerStatsRequest>,
    ) -> R<proto::ListContainerStatsResponse> {
        let stats = CriService::list_container_stats(self, req.into_inner().filter).await?;
        Ok(Response::new(proto::ListContainerStatsResponse { stats }))
    }

    async fn pod_sandbox_stats(
        &self,
        req: Request<proto::PodSandboxStatsRequest>,
    ) -> R<proto::PodSandboxStatsResponse> {
        let stats = CriService::pod_sandbox_stats(self, &req.into_inner().pod_sandbox_id).await?;
        Ok(Response::new(proto::PodSandboxStatsResponse {
            stats: Some(stats),
        }))
    }

    async fn list_pod_sandbox_stats(
        &self,
        req: Request<proto::ListPodSandboxStatsRequest>,
    ) -> R<proto::ListPodSandboxStatsResponse> {
        let stats = CriService::list_pod_sandbox_stats(self, req.into_inner().filter).await?;
        Ok(Response::new(proto::ListPodSandboxStatsResponse { stats }))
    }

    async fn update_runtime_config(
        &self,
        req: Request<proto::UpdateRuntimeConfigRequest>,
    ) -> R<proto::UpdateRuntimeConfigResponse> {
        let cidr = req
            .into_inner()
            .runtime_config
            .and_then(|c| c.network_config)
            .map(|n| n.pod_cidr)
            .unwrap_or_default();
        if !cidr.is_empty() {
            let mut g = match self.inner.pod_cidr.lock() {
                Ok(g) => g,
                Err(p) => p.into_inner(),
            };
            if *g != cidr {
                if let Some(t) = &self.inner.cfg.cni.conf_template {
                    let written =
                        crate::cni_template::render(t, &self.inner.cfg.cni.conf_dir, &cidr)?;
                    tracing::info!(pod_cidr = %cidr, conflist = %written.display(), "CNI configuration rendered");
                }
                tracing::info!(pod_cidr = %cidr, "runtime config updated");
                *g = cidr;
            }
        }
        Ok(Response::new(proto::UpdateRuntimeConfigResponse {}))
    }

    async fn status(&self, req: Request<proto::StatusRequest>) -> R<proto::StatusResponse> {
        Ok(Response::new(self.runtime_status(req.into_inner().verbose)))
    }

    async fn checkpoint_container(
        &self,
        _req: Request<proto::CheckpointContainerRequest>,
    ) -> R<proto::CheckpointContainerResponse> {
        Err(Status::unimplemented("checkpointing is not supported"))
    }

    type GetContainerEventsStream =
        Pin<Box<dyn Stream<Item = Result<proto::ContainerEventResponse, Status>> + Send + 'static>>;

    async fn get_container_events(
        &self,
        _req: Request<proto::GetEventsRequest>,
    ) -> R<Self::GetContainerEventsStream> {
        let rx = self.inner.events.subscribe();
        let s = BroadcastStream::new(rx).filter_map(|e| e.ok().map(Ok));
        Ok(Response::new(Box::pin(s)))
    }

    async fn list_metric_descriptors(
        &self,
        _req: Request<proto::ListMetricDescriptorsRequest>,
    ) -> R<proto::ListMetricDescriptorsResponse> {
        Ok(Response::new(proto::ListMetricDescriptorsResponse {
            descriptors: crate::metrics::descriptors(),
        }))
    }

    async fn list_pod_sandbox_metrics(
        &self,
        _req: Request<proto::ListPodSandboxMetricsRequest>,
    ) -> R<proto::ListPodSandboxMetricsResponse> {
        Ok(Response::new(proto::ListPodSandboxMetricsResponse {
            pod_metrics: self.pod_sandbox_metrics().await?,
        }))
    }

    type StreamPodSandboxMetricsStream = Chunks<proto::StreamPodSandboxMetricsResponse>;

    async fn stream_pod_sandbox_metrics(
        &self,
        _req: Request<proto::StreamPodSandboxMetricsRequest>,
    ) -> R<Self::StreamPodSandboxMetricsStream> {
        let items = self.pod_sandbox_metrics().await?;
        Ok(Response::new(chunked(items, |pod_sandbox_metrics| {
            proto::StreamPodSandboxMetricsResponse {
                pod_sandbox_metrics,
            }
        })))
    }

    type StreamPodSandboxesStream = Chunks<proto::StreamPodSandboxesResponse>;

    async fn stream_pod_sandboxes(
        &self,
        req: Request<proto::StreamPodSandboxesRequest>,
    ) -> R<Self::StreamPodSandboxesStream> {
        let items = self.list_sandboxes(req.into_inner().filter).await?;
        Ok(Response::new(chunked(items, |pod_sandboxes| {
            proto::StreamPodSandboxesResponse { pod_sandboxes }
        })))
    }

    type StreamContainersStream = Chunks<proto::StreamContainersResponse>;

    async fn stream_containers(
        &self,
        req: Request<proto::StreamContainersRequest>,
    ) -> R<Self::StreamContainersStream> {
        let items = CriService::list_containers(self, req.into_inner().filter).await?;
        Ok(Response::new(chunked(items, |containers| {
            proto::StreamContainersResponse { containers }
        })))
    }

    type StreamContainerStatsStream = Chunks<proto::StreamContainerStatsResponse>;

    async fn stream_container_stats(
        &self,
        req: Request<proto::StreamContainerStatsRequest>,
    ) -> R<Self::StreamContainerStatsStream> {
        let items = CriService::list_container_stats(self, req.into_inner().filter).await?;
        Ok(Response::new(chunked(items, |container_stats| {
            proto::StreamContainerStatsResponse { container_stats }
        })))
    }

    type StreamPodSandboxStatsStream = Chunks<proto::StreamPodSandboxStatsResponse>;

    async fn stream_pod_sandbox_stats(
        &self,
        req: Request<proto::StreamPodSandboxStatsRequest>,
    ) -> R<Self::StreamPodSandboxStatsStream> {
        let items = CriService::list_pod_sandbox_stats(self, req.into_inner().filter).await?;
        Ok(Response::new(chunked(items, |pod_sandbox_stats| {
            proto::StreamPodSandboxStatsResponse { pod_sandbox_stats }
        })))
    }

    async fn checkpoint_pod(
        &self,
        _req: Request<proto::CheckpointPodRequest>,
    ) -> R<proto::CheckpointPodResponse> {
        Err(Status::unimplemented("checkpointing is not supported"))
    }

    async fn restore_pod(
        &self,
        _req: Request<proto::RestorePodRequest>,
    ) -> R<proto::RestorePodResponse> {
        Err(Status::unimplemented(
            "restoring checkpoints is not supported",
        ))
    }

    async fn update_pod_sandbox_resources(
        &self,
        req: Request<proto::UpdatePodSandboxResourcesRequest>,
    ) -> R<proto::UpdatePodSandboxResourcesResponse> {
        let r = req.into_inner();
        self.update_sandbox_resources(&r.pod_sandbox_id, r.overhead, r.resources)
            .await?;
        Ok(Response::new(proto::UpdatePodSandboxResourcesResponse {}))
    }

    async fn runtime_config(
        &self,
        _req: Request<proto::RuntimeConfigRequest>,
    ) -> R<proto::RuntimeConfigResponse> {
        let driver = match self.config().cgroup_driver {
            podctl_runtime::CgroupDriver::Systemd => proto::CgroupDriver::Systemd,
            podctl_runtime::CgroupDriver::Cgroupfs => proto::CgroupDriver::Cgroupfs,
        };
        Ok(Response::new(proto::RuntimeConfigResponse {
            linux: Some(proto::LinuxRuntimeConfiguration {
                cgroup_driver: driver as i32,
            }),
        }))
    }
}

impl CriService {
    async fn require_running(&self, id: &str) -> Result<(), Status> {
        let cid = id.to_string();
        let st = self
            .blocking(move |i| Ok(i.runtime.container_status(&cid)?))
            .await?;
        if st.state != podctl_runtime::ContainerState::Running {
            return Err(Status::failed_precondition(format!(
                "container {id} is not running"
            )));
        }
        Ok(())
    }

    /// Apply new limits and remember them for ContainerStatus.
    pub(crate) async fn update_resources(
        &self,
        id: &str,
        lin: proto::LinuxContainerResources,
    ) -> crate::error::Result<()> {
        let id = self.container_id(id)?;
        let r = resources_of(&lin);
        let cid = id.clone();
        self.blocking(move |i| Ok(i.runtime.update_resources(&cid, &r)?))
            .await?;
        let mut rec = self.inner.records.container(&id)?;
        rec.resources = Some(lin);
        self.inner.records.put_container(&rec)
    }

    /// RuntimeReady, and NetworkReady when a CNI network list and its
    /// plugins are present.
    pub(crate) fn runtime_status(&self, verbose: bool) -> proto::StatusResponse {
        let net = crate::netcheck::network_ready(&self.config().cni);
        let cond = |t: &str, ok: bool, reason: &str, msg: String| proto::RuntimeCondition {
            r#type: t.into(),
            status: ok,
            reason: if ok { String::new() } else { reason.into() },
            message: if ok { String::new() } else { msg },
        };
        let userns = podctl_runtime::userns::supported();
        let mut info = std::collections::HashMap::new();
        if verbose {
            let v = serde_json::json!({
                "cgroupDriver": self.config().cgroup_driver,
                "cni": self.config().cni,
                "root": self.config().root,
                "state": self.config().state,
                // Where containers' root filesystems are mounted (critest
                // probes idmapped-mount support on its parent).
                "stateDir": self.config().state.join("containers"),
            });
            info.insert("config".to_string(), v.to_string());
        }
        proto::StatusResponse {
            status: Some(proto::RuntimeStatus {
                conditions: vec![
                    cond("RuntimeReady", true, "", String::new()),
                    cond(
                        "NetworkReady",
                        net.is_ok(),
                        "NetworkPluginNotReady",
                        net.err().unwrap_or_default(),
                    ),
                ],
            }),
            info,
            runtime_handlers: std::iter::once(String::new())
                .chain(self.config().runtime_handlers.iter().cloned())
                .map(|name| proto::RuntimeHandler {
                    name,
                    features: Some(proto::RuntimeHandlerFeatures {
                        recursive_read_only_mounts: true,
                        user_namespaces: userns,
                    }),
                })
                .collect(),
            features: Some(proto::RuntimeFeatures {
                supplemental_groups_policy: true,
                user_namespaces_host_network: false,
                mount_options: false,
            }),
        }
    }
}
