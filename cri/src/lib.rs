//! podctl cri (work in progress; see docs/architecture.md).
