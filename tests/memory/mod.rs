//! The in-memory backend's own behaviour.

mod concurrency;
mod spray;
