//! The node's heartbeat: a Lease in `kube-node-lease` renewed every
//! `lease_renew` (the kubelet renews every 10 s a lease of 40 s).

use k8s_openapi::api::coordination::v1::{Lease, LeaseSpec};
use k8s_openapi::api::core::v1::Node;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{MicroTime, ObjectMeta, OwnerReference};
use kube::api::{Api, Patch, PatchParams, PostParams};
use kube::Client;

use crate::error::{api_code, ApiContext, Result};

const NAMESPACE: &str = "kube-node-lease";

fn now_micro() -> MicroTime {
    MicroTime(crate::status::now().0)
}

/// Create the lease (owned by the Node, so it goes with it) or renew it.
pub async fn renew(client: &Client, node: &Node, duration_secs: i32) -> Result<()> {
    let name = node.metadata.name.clone().unwrap_or_default();
    let api: Api<Lease> = Api::namespaced(client.clone(), NAMESPACE);
    let patch = serde_json::json!({"spec": {
        "holderIdentity": name,
        "leaseDurationSeconds": duration_secs,
        "renewTime": now_micro(),
    }});
    match api
        .patch(&name, &PatchParams::default(), &Patch::Merge(&patch))
        .await
    {
        Ok(_) => return Ok(()),
        Err(e) if api_code(&e) == Some(404) => {}
        Err(e) => return Err(e).api(format!("renew Lease {NAMESPACE}/{name}")),
    }
    let lease = Lease {
        metadata: ObjectMeta {
            name: Some(name.clone()),
            namespace: Some(NAMESPACE.into()),
            owner_references: node.metadata.uid.clone().map(|uid| {
                vec![OwnerReference {
                    api_version: "v1".into(),
                    kind: "Node".into(),
                    name: name.clone(),
                    uid,
                    ..Default::default()
                }]
            }),
            ..Default::default()
        },
        spec: Some(LeaseSpec {
            holder_identity: Some(name.clone()),
            lease_duration_seconds: Some(duration_secs),
            renew_time: Some(now_micro()),
            ..Default::default()
        }),
    };
    match api.create(&PostParams::default(), &lease).await {
        Ok(_) => Ok(()),
        Err(e) if api_code(&e) == Some(409) => Ok(()),
        Err(e) => Err(e).api(format!("create Lease {NAMESPACE}/{name}")),
    }
}
