//! The engine's sources and event sink in node mode: ConfigMaps, Secrets
//! and service-account tokens read from the API server (only when a pod
//! needs them), events posted as core/v1 Events.

use futures::future::BoxFuture;
use k8s_openapi::api::authentication::v1::{
    BoundObjectReference, TokenRequest as ApiTokenRequest, TokenRequestSpec,
};
use k8s_openapi::api::core::v1::{
    ConfigMap, Event as ApiEvent, EventSource, ObjectReference, Secret, Service, ServiceAccount,
};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{MicroTime, ObjectMeta};
use kube::api::{Api, PostParams};
use kube::Client;
use tokio::sync::mpsc;

use crate::error::{ApiContext, Result};
use crate::events::{Event, EventSink, EventType};
use crate::sources::{Sources, Token, TokenRequest};

/// ConfigMaps, Secrets and tokens from the API server.
#[derive(Clone)]
pub struct ApiSources {
    pub client: Client,
}

impl Sources for ApiSources {
    fn config_map<'a>(
        &'a self,
        namespace: &'a str,
        name: &'a str,
    ) -> BoxFuture<'a, Result<Option<ConfigMap>>> {
        Box::pin(async move {
            Api::<ConfigMap>::namespaced(self.client.clone(), namespace)
                .get_opt(name)
                .await
                .api(format!("get ConfigMap {namespace}/{name}"))
        })
    }

    fn secret<'a>(
        &'a self,
        namespace: &'a str,
        name: &'a str,
    ) -> BoxFuture<'a, Result<Option<Secret>>> {
        Box::pin(async move {
            Api::<Secret>::namespaced(self.client.clone(), namespace)
                .get_opt(name)
                .await
                .api(format!("get Secret {namespace}/{name}"))
        })
    }

    fn services<'a>(
        &'a self,
        namespace: &'a str,
        links: bool,
    ) -> BoxFuture<'a, Result<Vec<Service>>> {
        Box::pin(async move {
            let lp = kube::api::ListParams::default();
            let mut out: Vec<Service> = Vec::new();
            if links {
                out = Api::<Service>::namespaced(self.client.clone(), namespace)
                    .list(&lp)
                    .await
                    .api(format!("list Services in {namespace}"))?
                    .items;
            }
            if !links || namespace != "default" {
                if let Some(k) = Api::<Service>::namespaced(self.client.clone(), "default")
                    .get_opt("kubernetes")
                    .await
                    .api("get Service default/kubernetes")?
                {
                    out.push(k);
                }
            }
            Ok(out)
        })
    }

    fn token<'a>(&'a self, req: &'a TokenRequest) -> BoxFuture<'a, Result<Option<Token>>> {
        Box::pin(async move {
            let api = Api::<ServiceAccount>::namespaced(self.client.clone(), &req.namespace);
            let body = ApiTokenRequest {
                metadata: ObjectMeta::default(),
                spec: Some(TokenRequestSpec {
                    audiences: req.audience.clone().map(|a| vec![a]),
                    expiration_seconds: Some(req.expiration_seconds),
                    bound_object_ref: Some(BoundObjectReference {
                        api_version: Some("v1".into()),
                        kind: Some("Pod".into()),
                        name: Some(req.pod_name.clone()),
                        uid: Some(req.pod_uid.clone()),
                    }),
                    ..Default::default()
                }),
                status: None,
            };
            let out: ApiTokenRequest = api
                .create_subresource("token", &req.service_account, &PostParams::default(), &body)
                .await
                .api(format!(
                    "TokenRequest for {}/{}",
                    req.namespace, req.service_account
                ))?;
            Ok(out.status.and_then(|s| {
                Some(Token {
                    token: s.token?,
                    expires_at: s.expiration_timestamp?.0.as_second(),
                })
            }))
        })
    }
}

/// Events posted to the API server from a background task (emit is
/// synchronous; a full queue drops the event with a log line).
#[derive(Clone)]
pub struct ApiEvents {
    tx: mpsc::Sender<Event>,
}

/// How long a repeated event is counted on the first one's object.
const AGGREGATE_FOR: std::time::Duration = std::time::Duration::from_secs(600);

/// What makes two events the same (then counted, not posted again).
type EventKey = (
    String,
    String,
    Option<String>,
    &'static str,
    String,
    &'static str,
);

impl ApiEvents {
    pub fn start(client: Client, node: String) -> ApiEvents {
        let (tx, mut rx) = mpsc::channel::<Event>(1024);
        tokio::spawn(async move {
            let mut n: u64 = 0;
            // Posted events: name, count, when first posted.
            let mut seen: std::collections::HashMap<EventKey, (String, i32, std::time::Instant)> =
                std::collections::HashMap::new();
            while let Some(e) = rx.recv().await {
                n += 1;
                let api = Api::<ApiEvent>::namespaced(client.clone(), &e.namespace);
                let key: EventKey = (
                    e.namespace.clone(),
                    e.uid.clone(),
                    e.field_path.clone(),
                    e.reason,
                    e.message.clone(),
                    e.kind.as_str(),
                );
                if seen.len() > 4096 {
                    seen.retain(|_, v| v.2.elapsed() < AGGREGATE_FOR);
                }
                if let Some((name, count, since)) = seen.get_mut(&key) {
                    if since.elapsed() < AGGREGATE_FOR {
                        *count += 1;
                        let patch = serde_json::json!({
                            "count": *count,
                            "lastTimestamp": crate::status::now(),
                        });
                        match api
                            .patch(
                                name,
                                &kube::api::PatchParams::default(),
                                &kube::api::Patch::Merge(&patch),
                            )
                            .await
                        {
                            Ok(_) => continue,
                            Err(err) => {
                                tracing::debug!(event = %name, error = %err, "counting event; posting anew")
                            }
                        }
                    }
                }
                let ev = to_api(&e, &node, n);
                let name = ev.metadata.name.clone().unwrap_or_default();
                match api.create(&PostParams::default(), &ev).await {
                    Ok(_) => {
                        seen.insert(key, (name, 1, std::time::Instant::now()));
                    }
                    Err(err) => {
                        tracing::warn!(pod = %e.pod, reason = e.reason, error = %err, "posting event")
                    }
                }
            }
        });
        ApiEvents { tx }
    }
}

fn to_api(e: &Event, node: &str, n: u64) -> ApiEvent {
    let now = crate::status::now();
    let stamp = now.0.as_nanosecond();
    ApiEvent {
        metadata: ObjectMeta {
            name: Some(format!("{}.{:x}{:x}", e.pod, stamp, n)),
            namespace: Some(e.namespace.clone()),
            ..Default::default()
        },
        involved_object: ObjectReference {
            api_version: Some("v1".into()),
            kind: Some("Pod".into()),
            name: Some(e.pod.clone()),
            namespace: Some(e.namespace.clone()),
            uid: Some(e.uid.clone()),
            field_path: e.field_path.clone(),
            ..Default::default()
        },
        reason: Some(e.reason.into()),
        message: Some(e.message.clone()),
        type_: Some(e.kind.as_str().into()),
        count: Some(1),
        first_timestamp: Some(now.clone()),
        last_timestamp: Some(now.clone()),
        event_time: Some(MicroTime(now.0)),
        source: Some(EventSource {
            component: Some("kubelet".into()),
            host: Some(node.into()),
        }),
        reporting_component: Some("kubelet".into()),
        reporting_instance: Some(node.into()),
        action: Some(e.reason.into()),
        ..Default::default()
    }
}

impl EventSink for ApiEvents {
    fn emit(&self, e: Event) {
        crate::events::log(&e);
        if self.tx.try_send(e).is_err() {
            tracing::warn!("event queue full; event dropped");
        }
    }
}

/// A node-level event (e.g. Starting, NodeReady) posted right away.
pub async fn node_event(
    client: &Client,
    node: &str,
    uid: &str,
    reason: &'static str,
    message: String,
) {
    let e = Event {
        namespace: "default".into(),
        pod: node.into(),
        uid: uid.into(),
        field_path: None,
        kind: EventType::Normal,
        reason,
        message,
    };
    let mut ev = to_api(&e, node, 0);
    ev.involved_object.kind = Some("Node".into());
    ev.involved_object.namespace = None;
    if let Err(err) = Api::<ApiEvent>::namespaced(client.clone(), "default")
        .create(&PostParams::default(), &ev)
        .await
    {
        tracing::warn!(reason, error = %err, "posting node event");
    }
}
