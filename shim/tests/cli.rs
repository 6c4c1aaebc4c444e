//! The shim binary's command line (also makes `cargo test -p podctl-shim`
//! build the binary the runtime's integration tests use).

use std::process::Command;

#[test]
fn rejects_unknown_and_incomplete_commands() {
    let shim = env!("CARGO_BIN_EXE_podctl-shim");
    for args in [&[][..], &["frobnicate"][..], &["create", "--id", "x"][..]] {
        let out = Command::new(shim)
            .args(args)
            .output()
            .unwrap_or_else(|e| panic!("{shim}: {e}"));
        assert!(!out.status.success(), "{args:?}");
        assert!(
            String::from_utf8_lossy(&out.stderr).starts_with("podctl-shim: "),
            "{args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
}
