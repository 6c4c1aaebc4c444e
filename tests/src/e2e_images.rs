//! The images Kubernetes' e2e `[NodeConformance]` specs run, rebuilt from
//! this machine's Debian packages (and the `agnhost` binary built from the
//! same Kubernetes tree as `e2e.test`), published under the repository
//! paths and tags `e2e.test` asks for, so that a `KUBE_TEST_REPO_LIST`
//! pointing its registries at the local registry serves the suite offline.
//!
//! What the specs need of each (Kubernetes 1.24's `test/utils/image`):
//!
//! - `e2e-test-images/busybox:1.29-2`: the busybox base of
//!   [`crate::critest_images`] (coreutils applets, accounts) with bash as
//!   `sh` (which, like upstream's busybox 1.29, hands on variables whose
//!   names are not identifiers, `data-1`, to the programs it starts).
//! - `e2e-test-images/agnhost:2.33`: `/agnhost` as entrypoint with `pause`
//!   as its default argument (it prints `Paused`), `/agnhost-2` a link to
//!   it (the entrypoint-override specs), `curl` and `nc` (the networking
//!   and lifecycle-hook specs exec them), `/uploads` (netexec).
//! - `e2e-test-images/nginx:1.14-2` and `nginx:1.15-2`: nginx on port 80
//!   (two different images: the image-update specs change one for the
//!   other).
//! - `e2e-test-images/httpd:2.4.38-2` and `httpd:2.4.39-2`: a web server
//!   on port 80 (busybox httpd), likewise two images.
//! - `e2e-test-images/nonewprivs:1.3`, `nonroot:1.2` (busybox as user
//!   1234), `pause:3.6` (the gcRegistry's pause, sleeping until signalled).
//! - `authenticated-image-pulling/alpine:3.7`, in a registry behind Basic
//!   auth: the private-registry specs pull it with and without an image
//!   pull secret (`e2e.test --docker-config-file`).

use std::collections::BTreeSet;

use serde_json::json;

use crate::critest_images::{
    base_layers, base_libs, docker_image, httpd_command, list, marker, nginx_image, nginx_layer,
    nnp_command, sh_config, with, Content, CritestImage, Tree, HTTPD_INDEX, HTTPD_ROOT, NNP_ID,
    PATH_ENV, PAUSE_SCRIPT,
};
use crate::Result;

/// The repository prefix of the promoter's e2e images.
pub const E2E: &str = "e2e-test-images";
/// The repository prefix of the authenticated registry's images.
pub const AUTHENTICATED: &str = "authenticated-image-pulling";

fn image(repository: &str, tag: &str, content: Content, purpose: &'static str) -> CritestImage {
    CritestImage {
        upstream_host: "k8s.gcr.io",
        repository: repository.into(),
        tag: tag.into(),
        content,
        purpose,
    }
}

/// The open registry's images; `agnhost` is the path of the agnhost
/// binary (static, built from the Kubernetes tree).
pub fn build(agnhost: &str) -> Result<Vec<CritestImage>> {
    let base = base_layers()?;
    let libs = base_libs()?;
    let mut out = Vec::new();
    // Upstream's busybox 1.29 `sh` passes variables whose names are not
    // shell identifiers (`data-1` from envFrom) on to the programs it runs;
    // Debian's busybox and dash drop them, bash keeps them.
    let mut have: BTreeSet<String> = libs.clone();
    let bash = Tree::new()
        .host_binary("/bin/bash", "bin/bash", 0o755, &mut have)?
        .symlink("bin/sh", "bash")
        // Upstream's image has it in /bin (the sysctl specs run /bin/sysctl).
        .symlink("bin/sysctl", "busybox")
        .finish();
    out.push(image(
        &format!("{E2E}/busybox"),
        "1.29-2",
        list(docker_image(with(&base, [bash]), sh_config(json!({})))),
        "the default test image",
    ));

    let mut have: BTreeSet<String> = libs.clone();
    let tools = Tree::new()
        .file("agnhost", 0o755, &crate::critest_images::read(agnhost)?)
        .symlink("agnhost-2", "agnhost")
        .dir("uploads", 0o777)
        .host_binary("/usr/bin/curl", "usr/bin/curl", 0o755, &mut have)?
        .host_binary("/bin/nc.openbsd", "usr/bin/nc", 0o755, &mut have)?
        .finish();
    out.push(image(
        &format!("{E2E}/agnhost"),
        "2.33",
        list(docker_image(
            with(&base, [tools]),
            json!({
                "Env": [PATH_ENV],
                "Entrypoint": ["/agnhost"],
                "Cmd": ["pause"],
                "ExposedPorts": {"80/tcp": {}, "8080/tcp": {}, "8081/tcp": {}, "9376/tcp": {}},
            }),
        )),
        "agnhost: netexec, entrypoint-tester, pause, mounttest...",
    ));

    let nginx = nginx_layer(&libs)?;
    out.push(image(
        &format!("{E2E}/nginx"),
        "1.14-2",
        list(nginx_image(&base, &nginx, 80)),
        "web server on port 80",
    ));
    let newer = with(&base, [marker("nginx-1.15")]);
    out.push(image(
        &format!("{E2E}/nginx"),
        "1.15-2",
        list(nginx_image(&newer, &nginx, 80)),
        "the image an update changes to",
    ));

    let htdocs = Tree::new()
        .file(&format!("{HTTPD_ROOT}/index.html"), 0o644, HTTPD_INDEX)
        .finish();
    for (tag, mark) in [("2.4.38-2", "httpd-2.4.38"), ("2.4.39-2", "httpd-2.4.39")] {
        out.push(image(
            &format!("{E2E}/httpd"),
            tag,
            list(docker_image(
                with(&base, [htdocs.clone(), marker(mark)]),
                json!({
                    "Env": [PATH_ENV],
                    "Cmd": httpd_command(),
                    "ExposedPorts": {"80/tcp": {}},
                }),
            )),
            "web server on port 80",
        ));
    }

    let mut have = libs.clone();
    let nnp = Tree::new()
        .host_binary("/usr/bin/id", NNP_ID, 0o4755, &mut have)?
        .finish();
    out.push(image(
        &format!("{E2E}/nonewprivs"),
        "1.3",
        list(docker_image(
            with(&base, [nnp]),
            json!({"Env": [PATH_ENV], "Cmd": nnp_command()}),
        )),
        "NoNewPrivs",
    ));
    out.push(image(
        &format!("{E2E}/nonroot"),
        "1.2",
        list(docker_image(
            base.clone(),
            sh_config(json!({"User": "1234"})),
        )),
        "an image whose user is not root",
    ));
    out.push(image(
        "pause",
        "3.6",
        list(docker_image(
            base.clone(),
            json!({
                "Env": [PATH_ENV],
                "Entrypoint": ["/bin/sh", "-c", PAUSE_SCRIPT],
                "User": "65535:65535",
            }),
        )),
        "a container that sleeps",
    ));
    Ok(out)
}

/// The authenticated registry's image.
pub fn build_authenticated() -> Result<Vec<CritestImage>> {
    let base = base_layers()?;
    Ok(vec![image(
        &format!("{AUTHENTICATED}/alpine"),
        "3.7",
        list(docker_image(base, sh_config(json!({})))),
        "pulled with an image pull secret",
    )])
}

/// The `KUBE_TEST_REPO_LIST` file's YAML: the e2e registries on `open`
/// (`127.0.0.1:PORT`), the authenticated ones on `auth`.
pub fn repo_list(open: &str, auth: &str) -> String {
    format!(
        "gcAuthenticatedRegistry: {auth}/{AUTHENTICATED}\n\
         promoterE2eRegistry: {open}/{E2E}\n\
         buildImageRegistry: {open}/build-image\n\
         gcEtcdRegistry: {open}\n\
         gcRegistry: {open}\n\
         sigStorageRegistry: {open}/sig-storage\n\
         privateRegistry: {auth}/k8s-authenticated-test\n\
         dockerLibraryRegistry: {open}/library\n\
         cloudProviderGcpRegistry: {open}/cloud-provider-gcp\n"
    )
}

/// The docker config JSON `e2e.test` puts in its image pull secret.
pub fn docker_config(auth_host: &str, user: &str, pass: &str) -> String {
    use base64::Engine as _;
    let token = base64::engine::general_purpose::STANDARD.encode(format!("{user}:{pass}"));
    json!({"auths": {auth_host: {"auth": token}}}).to_string()
}
