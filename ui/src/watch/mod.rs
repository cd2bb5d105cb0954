//! `kdeck watch`: consumer groups seen from outside — a group picker, the
//! selected group's partitions with lag, lag in time and verdicts, its
//! members, a lag chart, and offset resets on an Empty group.

pub mod app;
pub mod intent;
pub mod model;
pub mod view;
