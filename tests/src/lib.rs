//! podctl test bed: registry fixture and image fixtures.
