//! Fuzz bodies (filled in by the fuzz work).
