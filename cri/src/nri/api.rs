//! The parts of NRI's protocol podctl speaks, as protobuf messages: the
//! ttrpc envelope (`ttrpc.Request`/`Response`) and the messages of
//! `nri.pkg.api.v1alpha1` that podctl sends or reads. Field numbers are
//! the wire contract; fields podctl neither sends nor reads are left out
//! (protobuf skips unknown fields on decoding).

use std::collections::HashMap;

/// The runtime's service, served by podctl on logical connection 2.
pub const RUNTIME_SERVICE: &str = "nri.pkg.api.v1alpha1.Runtime";
/// The plugin's service, called by podctl on logical connection 1.
pub const PLUGIN_SERVICE: &str = "nri.pkg.api.v1alpha1.Plugin";
/// The NRI version podctl's protocol follows.
pub const NRI_VERSION: &str = "v0.12.1";

/// ttrpc's request envelope.
#[derive(Clone, PartialEq, prost::Message)]
pub struct Request {
    #[prost(string, tag = "1")]
    pub service: String,
    #[prost(string, tag = "2")]
    pub method: String,
    #[prost(bytes = "vec", tag = "3")]
    pub payload: Vec<u8>,
    /// The caller's deadline; 0: none.
    #[prost(int64, tag = "4")]
    pub timeout_nano: i64,
}

/// ttrpc's response envelope: a status (absent or code 0: success) and
/// the method's response message.
#[derive(Clone, PartialEq, prost::Message)]
pub struct Response {
    #[prost(message, optional, tag = "1")]
    pub status: Option<Status>,
    #[prost(bytes = "vec", tag = "2")]
    pub payload: Vec<u8>,
}

/// `google.rpc.Status`, without details.
#[derive(Clone, PartialEq, prost::Message)]
pub struct Status {
    #[prost(int32, tag = "1")]
    pub code: i32,
    #[prost(string, tag = "2")]
    pub message: String,
}

/// gRPC's code for a method nobody serves.
pub const CODE_UNIMPLEMENTED: i32 = 12;
/// gRPC's code for a malformed request.
pub const CODE_INVALID_ARGUMENT: i32 = 3;

#[derive(Clone, PartialEq, prost::Message)]
pub struct Empty {}

#[derive(Clone, PartialEq, prost::Message)]
pub struct RegisterPluginRequest {
    #[prost(string, tag = "1")]
    pub plugin_name: String,
    #[prost(string, tag = "2")]
    pub plugin_idx: String,
    #[prost(string, tag = "3")]
    pub nri_version: String,
}

#[derive(Clone, PartialEq, prost::Message)]
pub struct ConfigureRequest {
    #[prost(string, tag = "1")]
    pub config: String,
    #[prost(string, tag = "2")]
    pub runtime_name: String,
    #[prost(string, tag = "3")]
    pub runtime_version: String,
    /// Milliseconds.
    #[prost(int64, tag = "4")]
    pub registration_timeout: i64,
    /// Milliseconds.
    #[prost(int64, tag = "5")]
    pub request_timeout: i64,
    #[prost(string, tag = "6")]
    pub nri_version: String,
}

#[derive(Clone, PartialEq, prost::Message)]
pub struct ConfigureResponse {
    /// The events the plugin subscribes to (bit `e - 1` for event `e`);
    /// 0: all.
    #[prost(int32, tag = "2")]
    pub events: i32,
}

#[derive(Clone, PartialEq, prost::Message)]
pub struct SynchronizeRequest {
    #[prost(message, repeated, tag = "1")]
    pub pods: Vec<PodSandbox>,
    #[prost(message, repeated, tag = "2")]
    pub containers: Vec<Container>,
    #[prost(bool, tag = "3")]
    pub more: bool,
}

#[derive(Clone, PartialEq, prost::Message)]
pub struct SynchronizeResponse {
    #[prost(bool, tag = "2")]
    pub more: bool,
}

/// The request of every pod event (RunPodSandbox, StopPodSandbox,
/// RemovePodSandbox).
#[derive(Clone, PartialEq, prost::Message)]
pub struct PodRequest {
    #[prost(message, optional, tag = "1")]
    pub pod: Option<PodSandbox>,
}

/// The request of every container event podctl sends.
#[derive(Clone, PartialEq, prost::Message)]
pub struct ContainerRequest {
    #[prost(message, optional, tag = "1")]
    pub pod: Option<PodSandbox>,
    #[prost(message, optional, tag = "2")]
    pub container: Option<Container>,
}

#[derive(Clone, PartialEq, prost::Message)]
pub struct PodSandbox {
    #[prost(string, tag = "1")]
    pub id: String,
    #[prost(string, tag = "2")]
    pub name: String,
    #[prost(string, tag = "3")]
    pub uid: String,
    #[prost(string, tag = "4")]
    pub namespace: String,
    #[prost(map = "string, string", tag = "5")]
    pub labels: HashMap<String, String>,
    #[prost(map = "string, string", tag = "6")]
    pub annotations: HashMap<String, String>,
    #[prost(string, tag = "7")]
    pub runtime_handler: String,
    #[prost(message, optional, tag = "8")]
    pub linux: Option<LinuxPodSandbox>,
    #[prost(uint32, tag = "9")]
    pub pid: u32,
    #[prost(string, repeated, tag = "10")]
    pub ips: Vec<String>,
}

#[derive(Clone, PartialEq, prost::Message)]
pub struct LinuxPodSandbox {
    #[prost(string, tag = "3")]
    pub cgroup_parent: String,
    #[prost(message, repeated, tag = "5")]
    pub namespaces: Vec<LinuxNamespace>,
}

#[derive(Clone, PartialEq, prost::Message)]
pub struct LinuxNamespace {
    #[prost(string, tag = "1")]
    pub r#type: String,
    #[prost(string, tag = "2")]
    pub path: String,
}

/// NRI's `ContainerState`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(i32)]
pub enum ContainerState {
    Unknown = 0,
    Created = 1,
    Running = 3,
    Stopped = 4,
}

#[derive(Clone, PartialEq, prost::Message)]
pub struct Container {
    #[prost(string, tag = "1")]
    pub id: String,
    #[prost(string, tag = "2")]
    pub pod_sandbox_id: String,
    #[prost(string, tag = "3")]
    pub name: String,
    /// A [`ContainerState`].
    #[prost(int32, tag = "4")]
    pub state: i32,
    #[prost(map = "string, string", tag = "5")]
    pub labels: HashMap<String, String>,
    #[prost(map = "string, string", tag = "6")]
    pub annotations: HashMap<String, String>,
    #[prost(string, repeated, tag = "7")]
    pub args: Vec<String>,
    #[prost(string, repeated, tag = "8")]
    pub env: Vec<String>,
    #[prost(message, repeated, tag = "9")]
    pub mounts: Vec<Mount>,
    #[prost(uint32, tag = "12")]
    pub pid: u32,
    #[prost(int64, tag = "14")]
    pub created_at: i64,
    #[prost(int64, tag = "15")]
    pub started_at: i64,
    #[prost(int64, tag = "16")]
    pub finished_at: i64,
    #[prost(int32, tag = "17")]
    pub exit_code: i32,
    #[prost(string, tag = "18")]
    pub status_reason: String,
    #[prost(string, tag = "19")]
    pub status_message: String,
}

#[derive(Clone, PartialEq, prost::Message)]
pub struct Mount {
    #[prost(string, tag = "1")]
    pub destination: String,
    #[prost(string, tag = "2")]
    pub r#type: String,
    #[prost(string, tag = "3")]
    pub source: String,
    #[prost(string, repeated, tag = "4")]
    pub options: Vec<String>,
}

/// NRI's lifecycle events, numbered as the protocol numbers them.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Event {
    RunPodSandbox = 1,
    StopPodSandbox = 2,
    RemovePodSandbox = 3,
    CreateContainer = 4,
    PostCreateContainer = 5,
    StartContainer = 6,
    PostStartContainer = 7,
    StopContainer = 10,
    RemoveContainer = 11,
}

/// Every event bit a plugin may subscribe to (events 1 to 14).
pub const VALID_EVENTS: i32 = (1 << 14) - 1;

impl Event {
    /// The plugin method that delivers this event.
    pub fn method(self) -> &'static str {
        match self {
            Event::RunPodSandbox => "RunPodSandbox",
            Event::StopPodSandbox => "StopPodSandbox",
            Event::RemovePodSandbox => "RemovePodSandbox",
            Event::CreateContainer => "CreateContainer",
            Event::PostCreateContainer => "PostCreateContainer",
            Event::StartContainer => "StartContainer",
            Event::PostStartContainer => "PostStartContainer",
            Event::StopContainer => "StopContainer",
            Event::RemoveContainer => "RemoveContainer",
        }
    }

    /// This event's bit in a subscription mask.
    pub fn bit(self) -> i32 {
        1 << (self as i32 - 1)
    }
}

/// CreateContainer's answer: what the plugin changes in the container
/// (updates and evictions of other containers are read, not applied).
#[derive(Clone, PartialEq, prost::Message)]
pub struct CreateContainerResponse {
    #[prost(message, optional, tag = "1")]
    pub adjust: Option<ContainerAdjustment>,
    #[prost(bytes = "vec", repeated, tag = "2")]
    pub update: Vec<Vec<u8>>,
    #[prost(bytes = "vec", repeated, tag = "3")]
    pub evict: Vec<Vec<u8>>,
}

#[derive(Clone, PartialEq, prost::Message)]
pub struct ContainerAdjustment {
    #[prost(map = "string, string", tag = "2")]
    pub annotations: HashMap<String, String>,
    #[prost(message, repeated, tag = "3")]
    pub mounts: Vec<Mount>,
    #[prost(message, repeated, tag = "4")]
    pub env: Vec<KeyValue>,
    #[prost(bytes = "vec", optional, tag = "5")]
    pub hooks: Option<Vec<u8>>,
    #[prost(message, optional, tag = "6")]
    pub linux: Option<LinuxContainerAdjustment>,
    #[prost(message, repeated, tag = "7")]
    pub rlimits: Vec<PosixRlimit>,
    #[prost(bytes = "vec", repeated, tag = "8")]
    pub cdi_devices: Vec<Vec<u8>>,
    #[prost(string, repeated, tag = "9")]
    pub args: Vec<String>,
}

#[derive(Clone, PartialEq, prost::Message)]
pub struct LinuxContainerAdjustment {
    #[prost(bytes = "vec", repeated, tag = "1")]
    pub devices: Vec<Vec<u8>>,
    #[prost(message, optional, tag = "2")]
    pub resources: Option<LinuxResources>,
    #[prost(string, tag = "3")]
    pub cgroups_path: String,
    #[prost(message, optional, tag = "4")]
    pub oom_score_adj: Option<OptionalInt64>,
    #[prost(bytes = "vec", optional, tag = "5")]
    pub io_priority: Option<Vec<u8>>,
    #[prost(bytes = "vec", optional, tag = "6")]
    pub seccomp_policy: Option<Vec<u8>>,
    #[prost(bytes = "vec", repeated, tag = "7")]
    pub namespaces: Vec<Vec<u8>>,
    #[prost(map = "string, string", tag = "8")]
    pub sysctl: HashMap<String, String>,
    #[prost(map = "string, bytes", tag = "9")]
    pub net_devices: HashMap<String, Vec<u8>>,
    #[prost(bytes = "vec", optional, tag = "10")]
    pub scheduler: Option<Vec<u8>>,
    #[prost(bytes = "vec", optional, tag = "11")]
    pub rdt: Option<Vec<u8>>,
    #[prost(bytes = "vec", optional, tag = "12")]
    pub memory_policy: Option<Vec<u8>>,
}

#[derive(Clone, PartialEq, prost::Message)]
pub struct LinuxResources {
    #[prost(message, optional, tag = "1")]
    pub memory: Option<LinuxMemory>,
    #[prost(message, optional, tag = "2")]
    pub cpu: Option<LinuxCpu>,
    #[prost(bytes = "vec", repeated, tag = "3")]
    pub hugepage_limits: Vec<Vec<u8>>,
    #[prost(bytes = "vec", optional, tag = "4")]
    pub blockio_class: Option<Vec<u8>>,
    #[prost(bytes = "vec", optional, tag = "5")]
    pub rdt_class: Option<Vec<u8>>,
    #[prost(map = "string, string", tag = "6")]
    pub unified: HashMap<String, String>,
    #[prost(bytes = "vec", repeated, tag = "7")]
    pub devices: Vec<Vec<u8>>,
    #[prost(message, optional, tag = "8")]
    pub pids: Option<LinuxPids>,
}

#[derive(Clone, PartialEq, prost::Message)]
pub struct LinuxMemory {
    #[prost(message, optional, tag = "1")]
    pub limit: Option<OptionalInt64>,
    #[prost(bytes = "vec", optional, tag = "2")]
    pub reservation: Option<Vec<u8>>,
    #[prost(message, optional, tag = "3")]
    pub swap: Option<OptionalInt64>,
    #[prost(bytes = "vec", optional, tag = "4")]
    pub kernel: Option<Vec<u8>>,
    #[prost(bytes = "vec", optional, tag = "5")]
    pub kernel_tcp: Option<Vec<u8>>,
    #[prost(bytes = "vec", optional, tag = "6")]
    pub swappiness: Option<Vec<u8>>,
    #[prost(bytes = "vec", optional, tag = "7")]
    pub disable_oom_killer: Option<Vec<u8>>,
    #[prost(bytes = "vec", optional, tag = "8")]
    pub use_hierarchy: Option<Vec<u8>>,
}

#[derive(Clone, PartialEq, prost::Message)]
pub struct LinuxCpu {
    #[prost(message, optional, tag = "1")]
    pub shares: Option<OptionalUInt64>,
    #[prost(message, optional, tag = "2")]
    pub quota: Option<OptionalInt64>,
    #[prost(message, optional, tag = "3")]
    pub period: Option<OptionalUInt64>,
    #[prost(bytes = "vec", optional, tag = "4")]
    pub realtime_runtime: Option<Vec<u8>>,
    #[prost(bytes = "vec", optional, tag = "5")]
    pub realtime_period: Option<Vec<u8>>,
    #[prost(string, tag = "6")]
    pub cpus: String,
    #[prost(string, tag = "7")]
    pub mems: String,
}

#[derive(Clone, PartialEq, prost::Message)]
pub struct LinuxPids {
    #[prost(int64, tag = "1")]
    pub limit: i64,
}

#[derive(Clone, PartialEq, prost::Message)]
pub struct OptionalInt64 {
    #[prost(int64, tag = "1")]
    pub value: i64,
}

#[derive(Clone, PartialEq, prost::Message)]
pub struct OptionalUInt64 {
    #[prost(uint64, tag = "1")]
    pub value: u64,
}

#[derive(Clone, PartialEq, prost::Message)]
pub struct KeyValue {
    #[prost(string, tag = "1")]
    pub key: String,
    #[prost(string, tag = "2")]
    pub value: String,
}

#[derive(Clone, PartialEq, prost::Message)]
pub struct PosixRlimit {
    #[prost(string, tag = "1")]
    pub r#type: String,
    #[prost(uint64, tag = "2")]
    pub hard: u64,
    #[prost(uint64, tag = "3")]
    pub soft: u64,
}
