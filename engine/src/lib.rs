//! PiCloud's Rhai engine.

pub mod error;
pub mod native;
pub mod value;
