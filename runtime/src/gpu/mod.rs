//! The wgpu executor (in progress).
