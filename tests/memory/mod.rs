//! Behaviour particular to the in-memory backend: exactness under threads, the key cap (also
//! against a spray of ten million keys), sweeping of ended windows, and configuration errors.

mod capacity;
mod concurrency;
mod config;
mod spray;
mod sweeping;
