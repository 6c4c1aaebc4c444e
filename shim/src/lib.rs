//! podctl shim (work in progress; see docs/architecture.md).
