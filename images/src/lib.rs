//! podctl images.
