//! Termination messages: the per-attempt file mounted at the container's
//! terminationMessagePath, and what an exited container's status says
//! (that file, or with `FallbackToLogsOnError` the tail of its log).

use k8s_openapi::api::core::v1::Container;
use podctl_cri::proto;

use super::WorkerConfig;

/// Bytes of a termination message kept (the kubelet's limit).
const MESSAGE_MAX: usize = 4096;
/// What `FallbackToLogsOnError` takes of the log (the kubelet's limits).
const MESSAGE_LOG_LINES: usize = 80;
const MESSAGE_LOG_BYTES: usize = 2048;

pub(super) fn message_file(
    cfg: &WorkerConfig,
    uid: &str,
    name: &str,
    attempt: u32,
) -> std::path::PathBuf {
    cfg.pods_root
        .join(uid)
        .join("containers")
        .join(name)
        .join(format!("{attempt}-termination-log"))
}

/// The terminated container's message: its termination-message file, or
/// with `FallbackToLogsOnError` and a failure, the tail of its log.
fn termination_message(
    cfg: &WorkerConfig,
    uid: &str,
    c: &Container,
    st: &proto::ContainerStatus,
) -> String {
    let attempt = st.metadata.as_ref().map(|m| m.attempt).unwrap_or(0);
    let mut msg = std::fs::read(message_file(cfg, uid, &c.name, attempt)).unwrap_or_default();
    msg.truncate(MESSAGE_MAX);
    let msg = String::from_utf8_lossy(&msg).into_owned();
    if msg.is_empty()
        && st.exit_code != 0
        && c.termination_message_policy.as_deref() == Some("FallbackToLogsOnError")
    {
        let log = std::fs::read_to_string(&st.log_path).unwrap_or_default();
        return crate::crilog::tail_message(&log, MESSAGE_LOG_LINES, MESSAGE_LOG_BYTES);
    }
    msg
}

/// `st` with its termination message filled in once it has exited, so no
/// status of an exited container is published without one. As the
/// kubelet does, the runtime's own message (a StartError's reason) comes
/// first and the container's message is appended after `": "`.
pub(super) fn with_message(
    cfg: &WorkerConfig,
    uid: &str,
    spec: Option<&Container>,
    mut st: proto::ContainerStatus,
) -> proto::ContainerStatus {
    if let Some(spec) = spec {
        if st.state == proto::ContainerState::ContainerExited as i32 {
            let own = termination_message(cfg, uid, spec, &st);
            if !own.is_empty() {
                if !st.message.is_empty() {
                    st.message.push_str(": ");
                }
                st.message.push_str(&own);
            }
        }
    }
    st
}
