//! The audit log: one JSON line per token issued, blob and manifest pushed, manifest pulled,
//! delete, and refused request. Who did what, never with what secret.
//!
//! Records go through a bounded queue to one writer thread, so a slow or full disk never
//! holds a request: when the queue is full or a write fails the record is counted
//! (`portcullis_audit_write_failures_total`), an ERROR is logged at most once a minute, and
//! requests are served as before. The file is opened for appending and reopened on
//! [`Audit::reopen`] (SIGUSR1), which is what logrotate's `postrotate` needs.

use std::fs::{File, OpenOptions};
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::sync::mpsc::{sync_channel, Receiver, SyncSender, TrySendError};
use std::time::{Duration, Instant};

use serde_json::{Map, Value};
use time::format_description::well_known::Rfc3339;
use time::OffsetDateTime;

use super::metrics::metrics;
use crate::config::AuditTarget;

/// Records waiting for the writer; beyond this they are dropped and counted.
const QUEUE: usize = 16_384;
/// At most one ERROR line per this interval about failed audit writes.
const ERROR_INTERVAL: Duration = Duration::from_secs(60);

enum Message {
    Record(String),
    Reopen,
}

/// A handle on the audit log; cheap to clone. A disabled one drops every record.
#[derive(Clone, Default)]
pub struct Audit {
    sender: Option<SyncSender<Message>>,
}

impl std::fmt::Debug for Audit {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Audit")
            .field("enabled", &self.sender.is_some())
            .finish()
    }
}

/// One audit record under construction: `event`, `time`, then the fields given.
#[must_use = "a record is written by Record::write"]
pub struct Record {
    fields: Map<String, Value>,
}

impl Record {
    /// Add a field (skipped when `value` is null).
    pub fn field(mut self, name: &str, value: impl Into<Value>) -> Record {
        let value = value.into();
        if !value.is_null() {
            self.fields.insert(name.to_owned(), value);
        }
        self
    }

    /// Hand the record to the writer.
    pub fn write(self, audit: &Audit) {
        let Some(sender) = &audit.sender else {
            return;
        };
        let line = Value::Object(self.fields).to_string();
        match sender.try_send(Message::Record(line)) {
            Ok(()) => {}
            Err(TrySendError::Full(_)) | Err(TrySendError::Disconnected(_)) => {
                metrics().audit_write_failure();
            }
        }
    }
}

impl Audit {
    /// Open the target (a file is created if needed and appended to) and start the writer.
    pub fn open(target: &AuditTarget) -> io::Result<Audit> {
        let sink = Sink::open(target)?;
        let (sender, receiver) = sync_channel(QUEUE);
        std::thread::Builder::new()
            .name("portcullis-audit".into())
            .spawn(move || writer(sink, receiver))?;
        Ok(Audit {
            sender: Some(sender),
        })
    }

    /// Is anything recorded?
    pub fn enabled(&self) -> bool {
        self.sender.is_some()
    }

    /// Start a record of `event`.
    pub fn record(&self, event: &str) -> Record {
        let mut fields = Map::new();
        if self.enabled() {
            let now = OffsetDateTime::now_utc()
                .format(&Rfc3339)
                .unwrap_or_default();
            fields.insert("time".into(), now.into());
            fields.insert("event".into(), event.into());
        }
        Record { fields }
    }

    /// Close and reopen the file (after logrotate moved it).
    pub fn reopen(&self) {
        if let Some(sender) = &self.sender {
            let _ = sender.try_send(Message::Reopen);
        }
    }
}

enum Sink {
    Stdout,
    File { path: PathBuf, file: File },
}

impl Sink {
    fn open(target: &AuditTarget) -> io::Result<Sink> {
        Ok(match target {
            AuditTarget::Stdout => Sink::Stdout,
            AuditTarget::File(path) => Sink::File {
                file: append(path)?,
                path: path.clone(),
            },
        })
    }

    fn write_line(&mut self, line: &str) -> io::Result<()> {
        let mut bytes = Vec::with_capacity(line.len() + 1);
        bytes.extend_from_slice(line.as_bytes());
        bytes.push(b'\n');
        match self {
            Sink::Stdout => io::stdout().lock().write_all(&bytes),
            // One write call per record: with O_APPEND, lines never interleave.
            Sink::File { file, .. } => file.write_all(&bytes),
        }
    }

    fn reopen(&mut self) -> io::Result<()> {
        if let Sink::File { path, file } = self {
            *file = append(path)?;
        }
        Ok(())
    }
}

fn append(path: &Path) -> io::Result<File> {
    OpenOptions::new().create(true).append(true).open(path)
}

fn writer(mut sink: Sink, receiver: Receiver<Message>) {
    let mut last_error: Option<Instant> = None;
    let mut failed_since_report = 0u64;
    let mut failed = |error: io::Error, what: &str| {
        metrics().audit_write_failure();
        failed_since_report += 1;
        if last_error.is_none_or(|at| at.elapsed() >= ERROR_INTERVAL) {
            tracing::error!(
                failed_records = failed_since_report,
                "audit log: cannot {what}: {error}; requests are still served, the records are lost (portcullis_audit_write_failures_total counts them)"
            );
            last_error = Some(Instant::now());
            failed_since_report = 0;
        }
    };
    while let Ok(message) = receiver.recv() {
        match message {
            Message::Record(line) => {
                if let Err(error) = sink.write_line(&line) {
                    failed(error, "write");
                }
            }
            Message::Reopen => match sink.reopen() {
                Ok(()) => tracing::info!("audit log reopened"),
                Err(error) => failed(error, "reopen the file"),
            },
        }
    }
}
