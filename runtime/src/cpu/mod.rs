//! Placeholder: the CPU executor lands here.
