//! PiCloud's Rhai engine.

pub mod error;
pub mod native;
pub mod value;
pub mod format;
pub mod json;
pub mod stdlib;
