//! Where the engine's Kubernetes-style events go: the API server in node
//! mode, the log (and the pod's event file) in standalone mode.

use std::io::Write as _;
use std::path::PathBuf;

/// `Normal` or `Warning`, as in core/v1 Event.type.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum EventType {
    Normal,
    Warning,
}

impl EventType {
    pub fn as_str(self) -> &'static str {
        match self {
            EventType::Normal => "Normal",
            EventType::Warning => "Warning",
        }
    }
}

/// One event about a pod (and, where `field_path` is set, one of its
/// containers: `spec.containers{name}`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Event {
    pub namespace: String,
    pub pod: String,
    pub uid: String,
    pub field_path: Option<String>,
    pub kind: EventType,
    /// Pulling, Pulled, Created, Started, Killing, BackOff, Unhealthy, ...
    pub reason: &'static str,
    pub message: String,
}

pub trait EventSink: Send + Sync {
    fn emit(&self, e: Event);
}

/// One log line for an event (every sink logs what it emits).
pub fn log(e: &Event) {
    tracing::info!(
        pod = %format!("{}/{}", e.namespace, e.pod),
        object = e.field_path.as_deref().unwrap_or(""),
        kind = e.kind.as_str(),
        reason = e.reason,
        "{}",
        e.message
    );
}

/// Events to the log and, when `file` is set, one JSON line each to it.
#[derive(Clone, Debug, Default)]
pub struct LogEvents {
    pub file: Option<PathBuf>,
}

impl EventSink for LogEvents {
    fn emit(&self, e: Event) {
        log(&e);
        if let Some(path) = &self.file {
            let line = serde_json::json!({
                "time": crate::status::now(),
                "type": e.kind.as_str(),
                "reason": e.reason,
                "object": e.field_path,
                "message": e.message,
            });
            if let Ok(mut f) = std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(path)
            {
                let _ = writeln!(f, "{line}");
            }
        }
    }
}
