//! Unit tests for the standard library, with a small `Caller` that runs
//! callbacks as Rust closures registered by name.
