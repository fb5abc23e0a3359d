//! The command-line side: sanlock's syntax and text, plus `--json`.

pub mod args;
pub mod client_cmd;
pub mod direct_cmd;
pub mod docs;
pub mod ha_cmd;
pub mod xleases_cmd;
