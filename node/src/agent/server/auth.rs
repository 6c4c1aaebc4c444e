//! Who is calling the kubelet API and may they: an x509 client
//! certificate signed by the client CA (user = CN, groups = O), or a
//! bearer token checked with a TokenReview; then a SubjectAccessReview for
//! the node resource and subresource the path maps to, as the kubelet does.

use k8s_openapi::api::authentication::v1::{TokenReview, TokenReviewSpec};
use k8s_openapi::api::authorization::v1::{
    ResourceAttributes, SubjectAccessReview, SubjectAccessReviewSpec,
};
use kube::api::{Api, PostParams};
use kube::Client;

/// An authenticated caller.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct User {
    pub name: String,
    pub groups: Vec<String>,
}

/// User and groups from a client certificate's subject (CN, O).
pub fn from_certificate(der: &[u8]) -> Option<User> {
    let (_, cert) = x509_parser::parse_x509_certificate(der).ok()?;
    let subject = cert.subject();
    let name = subject
        .iter_common_name()
        .next()
        .and_then(|cn| cn.as_str().ok())?
        .to_string();
    let groups = subject
        .iter_organization()
        .filter_map(|o| o.as_str().ok().map(str::to_string))
        .collect();
    Some(User { name, groups })
}

/// A bearer token's user, `None` when the API server does not know it.
pub async fn from_token(client: &Client, token: &str) -> Option<User> {
    let review = TokenReview {
        spec: TokenReviewSpec {
            token: token.into(),
            ..Default::default()
        },
        ..Default::default()
    };
    let out = Api::<TokenReview>::all(client.clone())
        .create(&PostParams::default(), &review)
        .await
        .map_err(|e| tracing::warn!(error = %e, "TokenReview"))
        .ok()?;
    let st = out.status?;
    if st.authenticated != Some(true) {
        return None;
    }
    let u = st.user?;
    Some(User {
        name: u.username.unwrap_or_default(),
        groups: u.groups.unwrap_or_default(),
    })
}

/// The kubelet's mapping of a path to the `nodes` subresource it needs.
pub fn subresource(path: &str) -> &'static str {
    let first = path.trim_start_matches('/').split('/').next().unwrap_or("");
    match first {
        "stats" => "stats",
        "metrics" => "metrics",
        "logs" => "log",
        "spec" => "spec",
        _ => "proxy",
    }
}

/// HTTP method → authorization verb.
pub fn verb(method: &hyper::Method) -> &'static str {
    match *method {
        hyper::Method::POST => "create",
        hyper::Method::PUT => "update",
        hyper::Method::PATCH => "patch",
        hyper::Method::DELETE => "delete",
        _ => "get",
    }
}

/// SubjectAccessReview: may `user` do `verb` on nodes/`sub` of `node`?
pub async fn allowed(client: &Client, user: &User, node: &str, verb: &str, sub: &str) -> bool {
    let review = SubjectAccessReview {
        spec: SubjectAccessReviewSpec {
            user: Some(user.name.clone()),
            groups: Some(user.groups.clone()),
            resource_attributes: Some(ResourceAttributes {
                verb: Some(verb.into()),
                resource: Some("nodes".into()),
                subresource: Some(sub.into()),
                name: Some(node.into()),
                ..Default::default()
            }),
            ..Default::default()
        },
        ..Default::default()
    };
    match Api::<SubjectAccessReview>::all(client.clone())
        .create(&PostParams::default(), &review)
        .await
    {
        Ok(r) => r.status.is_some_and(|s| s.allowed),
        Err(e) => {
            tracing::warn!(error = %e, "SubjectAccessReview");
            false
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_map_to_node_subresources() {
        assert_eq!(subresource("/stats/summary"), "stats");
        assert_eq!(subresource("/metrics"), "metrics");
        assert_eq!(subresource("/containerLogs/ns/p/c"), "proxy");
        assert_eq!(subresource("/exec/ns/p/c"), "proxy");
        assert_eq!(subresource("/pods"), "proxy");
        assert_eq!(verb(&hyper::Method::POST), "create");
        assert_eq!(verb(&hyper::Method::GET), "get");
    }
}
