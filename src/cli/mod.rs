//! The command-line side: sanlock's syntax and text, plus `--json`.

pub mod args;
pub mod direct_cmd;
