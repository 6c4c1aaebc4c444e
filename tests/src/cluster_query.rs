//! What the cluster tests ask the API server about nodes, pods,
//! certificate requests and leases, through kubectl.

use std::path::Path;
use std::time::{Duration, Instant};

use crate::cluster::Cluster;
use crate::pki::{client_cert_of, serial_and_end};

impl Cluster {
    /// The status (`True`, `False`, `Unknown`) of condition `kind` of Node `node`.
    pub fn node_condition(&self, node: &str, kind: &str) -> Option<String> {
        let n = self.get_json(&["node", node])?;
        n["status"]["conditions"]
            .as_array()?
            .iter()
            .find(|x| x["type"] == kind)
            .and_then(|x| x["status"].as_str().map(str::to_string))
    }

    pub fn node_ready(&self, node: &str) -> bool {
        self.node_condition(node, "Ready").as_deref() == Some("True")
    }

    /// The Pod `name` of the default namespace as JSON (`Null` when absent).
    pub fn pod(&self, name: &str) -> serde_json::Value {
        self.get_json(&["pod", name]).unwrap_or_default()
    }

    /// The string at `path` in the Pod `name` ("" when absent).
    pub fn pod_str(&self, name: &str, path: &[&str]) -> String {
        let v = path.iter().fold(self.pod(name), |v, p| v[*p].clone());
        v.as_str().unwrap_or_default().to_string()
    }

    /// How many certificate requests `node` made itself
    /// (`system:node:<node>`) that were approved.
    pub fn approved_csrs_by_node(&self, node: &str) -> usize {
        let csrs = self.get_json(&["csr"]).unwrap_or_default();
        csrs["items"]
            .as_array()
            .into_iter()
            .flatten()
            .filter(|x| {
                x["spec"]["username"] == format!("system:node:{node}")
                    && x["status"]["conditions"][0]["type"] == "Approved"
            })
            .count()
    }

    /// `spec.renewTime` of `node`'s Lease.
    pub fn lease_renew_time(&self, node: &str) -> Option<String> {
        self.get_json(&["lease", "-n", "kube-node-lease", node])
            .and_then(|l| l["spec"]["renewTime"].as_str().map(str::to_string))
    }

    /// Wait (up to `secs`) until the client certificate `kubeconfig` names
    /// is no longer the file `first` (serial `first_serial`), and check the
    /// renewal: a new serial, and a CSR of the node's own approved. The new
    /// certificate's (serial, end).
    pub fn wait_renewed(
        &self,
        node: &str,
        kubeconfig: &Path,
        (first, first_serial): (&Path, &str),
        secs: u64,
    ) -> (String, String) {
        self.wait(&format!("{node}'s renewed certificate"), secs, || {
            let now = client_cert_of(kubeconfig);
            now != first && !serial_and_end(&now).0.is_empty()
        });
        let renewed = serial_and_end(&client_cert_of(kubeconfig));
        assert_ne!(first_serial, renewed.0, "{node}: same serial");
        assert!(
            self.approved_csrs_by_node(node) >= 1,
            "no renewal CSR approved for {node} itself"
        );
        renewed
    }

    /// Once `valid_for` has passed since `issued` (the first certificate
    /// has expired), `node` still talks to the API server: its Lease is
    /// renewed again and it is Ready.
    pub fn check_alive_past(&self, node: &str, issued: Instant, valid_for: Duration) {
        std::thread::sleep(valid_for.saturating_sub(issued.elapsed()));
        let before = self.lease_renew_time(node);
        self.wait(
            &format!("a renewal of {node}'s Lease with the new certificate"),
            40,
            || self.lease_renew_time(node) != before,
        );
        assert!(
            self.node_ready(node),
            "{node} is not Ready after its first certificate expired"
        );
    }
}
