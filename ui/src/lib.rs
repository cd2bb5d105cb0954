//! kdeck's view model and views: pure functions of a `Snapshot` and the view
//! state. No tokio, no Kafka — the views test in milliseconds.

pub mod app;
pub mod intent;
pub mod keymap;
pub mod model;
pub mod panels;
pub mod style;
pub mod time;
pub mod watch;
