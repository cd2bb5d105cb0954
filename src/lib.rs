//! kdeck: a production Kafka consumer that is its own live dashboard.
//! The engine (`engine`) knows nothing of terminals; `headless` and the
//! dashboard read the snapshots it publishes and send it commands.

pub mod admin;
pub mod cli;
pub mod config;
pub mod demo;
pub mod embedded;
pub mod engine;
pub mod headless;
pub mod logging;
pub mod metrics;
pub mod lag;
pub mod monitor;
pub mod security;
pub mod tools;
pub mod tui;
pub mod watch;
