//! Generates the CRI v1 messages, clients and servers from
//! `proto/runtime.proto`, podctl's own description of the protocol.

fn main() -> Result<(), Box<dyn std::error::Error>> {
    println!("cargo:rerun-if-changed=proto/runtime.proto");
    tonic_prost_build::configure()
        // CRI records on disk hold requests as JSON; fields added to the
        // protocol later read as their defaults from older records.
        .type_attribute(".", "#[derive(serde::Serialize, serde::Deserialize)]")
        .message_attribute(".", "#[serde(default)]")
        // Environment values became bytes; records written when they
        // were strings must still read.
        .field_attribute(
            ".runtime.v1.KeyValue.value",
            "#[serde(with = \"crate::records::env_value\")]",
        )
        .compile_protos(&["proto/runtime.proto"], &["proto"])?;
    Ok(())
}
