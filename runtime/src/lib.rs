//! podctl runtime (work in progress; see docs/architecture.md).
