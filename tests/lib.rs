//! One test binary for the whole crate: it links once.

mod support;

mod conformance;
mod memory;
mod properties;
