//! podctl node (work in progress; see docs/architecture.md).
