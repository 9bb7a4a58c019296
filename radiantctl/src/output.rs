//! How results are shown: tables for people, JSON for scripts, spinners only on a terminal.

use std::time::Duration;

use indicatif::ProgressBar;
use indicatif::ProgressStyle;
use serde_json::Value;

/// The `--output` choice.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Output {
    /// Human-readable tables.
    Table,
    /// One JSON document on stdout.
    Json,
}

/// A spinner on stderr for a long wait; indicatif draws nothing when stderr is not a
/// terminal, so pipes and CI logs stay clean.
pub struct Spinner(ProgressBar);

impl Spinner {
    /// Starts a spinner with `msg`.
    pub fn new(msg: impl Into<String>) -> Self {
        let pb = ProgressBar::new_spinner();
        pb.set_style(
            ProgressStyle::with_template("{spinner} {msg} ({elapsed})")
                .unwrap_or_else(|_| ProgressStyle::default_spinner()),
        );
        pb.set_message(msg.into());
        pb.enable_steady_tick(Duration::from_millis(100));
        Spinner(pb)
    }

    /// Changes the message.
    pub fn set(&self, msg: impl Into<String>) {
        self.0.set_message(msg.into());
    }
}

impl Drop for Spinner {
    fn drop(&mut self) {
        self.0.finish_and_clear();
    }
}

/// Prints a JSON value.
pub fn print_json(v: &Value) {
    println!("{}", serde_json::to_string_pretty(v).unwrap_or_else(|_| v.to_string()));
}
