//! Placeholder: the bundle reader lands here.
