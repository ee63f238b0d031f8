//! Append-only line logs (flow logs, audit logs) written off the data path. Connection tasks
//! hand finished lines to a bounded channel and never wait: when the writer thread falls behind,
//! lines are dropped and counted (`sumun_log_records_dropped_total`) rather than slowing
//! traffic. The writer rotates by size (`path` -> `path.1` -> ... `path.N`).
//!
//! Written lines' buffers go back to the senders ([`LogSink::buffer`]), so a steady stream of
//! lines (per-query audit events) allocates nothing once warm and the writer does not free
//! memory that the connection threads' allocator arenas then have to take back.

use std::fs::{self, File, OpenOptions};
use std::io::{self, BufWriter, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::{self, RecvTimeoutError, SyncSender, TrySendError};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::Duration;

/// Lines in flight between the data path and the writer. At ~150 bytes a line this bounds the
/// memory a stalled disk can cost to a few MiB.
const QUEUE_LINES: usize = 32 * 1024;
/// Spare line buffers kept for reuse: enough for a 5 ms batch at a few hundred thousand lines a
/// second, and at most a few hundred KiB.
const SPARE_BUFFERS: usize = 1024;
/// A buffer that grew past this (a long statement) is freed rather than kept.
const SPARE_CAPACITY: usize = 4 * 1024;

/// A handle for sending lines to one log file. Cloning shares the writer.
#[derive(Clone, Debug)]
pub struct LogSink {
    tx: SyncSender<Msg>,
    dropped: Arc<AtomicU64>,
    path: PathBuf,
    spare: Arc<Spare>,
}

/// Emptied line buffers on their way back from the writer to the senders.
#[derive(Debug, Default)]
struct Spare(Mutex<Vec<String>>);

enum Msg {
    Line(String),
    Flush(mpsc::Sender<()>),
}

#[derive(Debug, Clone, Copy)]
pub struct Rotation {
    pub max_size: u64,
    pub max_files: u32,
}

impl LogSink {
    /// Open (creating parent directories) and start the writer thread. `dropped` is the counter
    /// that records lines lost to back pressure.
    pub fn open(path: &Path, rotation: Rotation, dropped: Arc<AtomicU64>) -> io::Result<LogSink> {
        if let Some(parent) = path.parent() {
            if !parent.as_os_str().is_empty() {
                fs::create_dir_all(parent)?;
            }
        }
        let file = open_append(path)?;
        let size = file.metadata()?.len();
        let (tx, rx) = mpsc::sync_channel(QUEUE_LINES);
        let spare = Arc::new(Spare::default());
        let mut writer = Writer {
            path: path.to_path_buf(),
            out: BufWriter::with_capacity(64 * 1024, file),
            size,
            rotation,
            spare: spare.clone(),
            written: Vec::new(),
        };
        thread::Builder::new()
            .name("sumun-log".into())
            .spawn(move || writer.run(rx))?;
        Ok(LogSink {
            tx,
            dropped,
            path: path.to_path_buf(),
            spare,
        })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// An empty buffer to build a line in, reused from lines already written when one is
    /// free (never waits for the writer: a contended pool means a fresh buffer).
    pub fn buffer(&self) -> String {
        let reused = match self.spare.0.try_lock() {
            Ok(mut spare) => spare.pop(),
            Err(_) => None,
        };
        reused.unwrap_or_else(|| String::with_capacity(256))
    }

    /// Queue one line (without its newline). Never blocks.
    pub fn send(&self, line: String) {
        match self.tx.try_send(Msg::Line(line)) {
            Ok(()) => {}
            Err(TrySendError::Full(_)) | Err(TrySendError::Disconnected(_)) => {
                self.dropped.fetch_add(1, Ordering::Relaxed);
            }
        }
    }

    /// Wait until every line queued so far is on disk (for shutdown and tests).
    pub fn flush(&self) {
        let (done_tx, done_rx) = mpsc::channel();
        if self.tx.send(Msg::Flush(done_tx)).is_ok() {
            let _ = done_rx.recv_timeout(Duration::from_secs(5));
        }
    }
}

fn open_append(path: &Path) -> io::Result<File> {
    OpenOptions::new().create(true).append(true).open(path)
}

struct Writer {
    path: PathBuf,
    out: BufWriter<File>,
    size: u64,
    rotation: Rotation,
    spare: Arc<Spare>,
    /// Buffers of the current batch, handed back to the senders at its end.
    written: Vec<String>,
}

impl Writer {
    fn run(&mut self, rx: mpsc::Receiver<Msg>) {
        loop {
            // Block for the first message, then take whatever else is queued before flushing,
            // so a burst costs one write system call rather than one per line.
            let msg = match rx.recv_timeout(Duration::from_secs(1)) {
                Ok(msg) => msg,
                Err(RecvTimeoutError::Timeout) => continue,
                Err(RecvTimeoutError::Disconnected) => break,
            };
            self.handle(msg);
            while let Ok(msg) = rx.try_recv() {
                self.handle(msg);
            }
            let flushed = self.out.flush();
            self.report(flushed);
            self.recycle();
            // Let lines gather before looking again: a sender then finds the writer not
            // waiting and pays no wake-up, so a busy data path costs one queue push per line
            // instead of a thread wake-up per line. Lines reach the file within ~5 ms.
            std::thread::sleep(Duration::from_millis(5));
        }
        let flushed = self.out.flush();
        self.report(flushed);
    }

    fn handle(&mut self, msg: Msg) {
        match msg {
            Msg::Line(line) => {
                let len = line.len() as u64 + 1;
                if self.size > 0 && self.size + len > self.rotation.max_size {
                    let result = self.rotate();
                    self.report(result);
                }
                let result = self
                    .out
                    .write_all(line.as_bytes())
                    .and_then(|()| self.out.write_all(b"\n"));
                self.report(result);
                self.size += len;
                if line.capacity() <= SPARE_CAPACITY && self.written.len() < SPARE_BUFFERS {
                    self.written.push(line);
                }
            }
            Msg::Flush(done) => {
                let flushed = self.out.flush();
                self.report(flushed);
                let _ = done.send(());
            }
        }
    }

    /// Hand the batch's buffers back, emptied, up to the pool's size; free the rest.
    fn recycle(&mut self) {
        if self.written.is_empty() {
            return;
        }
        for line in &mut self.written {
            line.clear();
        }
        let mut spare = self.spare.0.lock().unwrap_or_else(|p| p.into_inner());
        let keep = SPARE_BUFFERS
            .saturating_sub(spare.len())
            .min(self.written.len());
        spare.extend(self.written.drain(..keep));
        drop(spare);
        self.written.clear();
    }

    fn rotate(&mut self) -> io::Result<()> {
        self.out.flush()?;
        let keep = self.rotation.max_files;
        if keep == 0 {
            fs::remove_file(&self.path)?;
        } else {
            for n in (1..keep).rev() {
                let from = numbered(&self.path, n);
                if from.exists() {
                    fs::rename(&from, numbered(&self.path, n + 1))?;
                }
            }
            fs::rename(&self.path, numbered(&self.path, 1))?;
        }
        self.out = BufWriter::with_capacity(64 * 1024, open_append(&self.path)?);
        self.size = 0;
        Ok(())
    }

    fn report(&self, result: io::Result<()>) {
        if let Err(err) = result {
            tracing::error!(path = %self.path.display(), error = %err, "cannot write log file");
        }
    }
}

fn numbered(path: &Path, n: u32) -> PathBuf {
    let mut name = path.as_os_str().to_os_string();
    name.push(format!(".{n}"));
    PathBuf::from(name)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rotates_by_size_and_keeps_max_files() {
        let dir = std::env::temp_dir().join(format!("sumun-logsink-{}", std::process::id()));
        let _ = fs::remove_dir_all(&dir);
        let path = dir.join("flows.log");
        let dropped = Arc::new(AtomicU64::new(0));
        let sink = LogSink::open(
            &path,
            Rotation {
                max_size: 100,
                max_files: 2,
            },
            dropped.clone(),
        )
        .expect("open");
        for i in 0..20 {
            sink.send(format!("line {i:02} padded to about thirty bytes"));
        }
        sink.flush();
        let current = fs::read_to_string(&path).expect("current");
        let one = fs::read_to_string(numbered(&path, 1)).expect(".1");
        assert!(numbered(&path, 2).exists());
        assert!(
            !numbered(&path, 3).exists(),
            "only max_files rotated files are kept"
        );
        assert!(current.ends_with("line 19 padded to about thirty bytes\n"));
        assert!(one.contains("line 17"), "{one}");
        assert!(current.len() <= 100);
        assert_eq!(dropped.load(Ordering::Relaxed), 0);
        let _ = fs::remove_dir_all(&dir);
    }

    #[test]
    fn written_buffers_come_back_empty() {
        let dir = std::env::temp_dir().join(format!("sumun-logsink-spare-{}", std::process::id()));
        let _ = fs::remove_dir_all(&dir);
        let path = dir.join("audit.jsonl");
        let sink = LogSink::open(
            &path,
            Rotation {
                max_size: 1 << 20,
                max_files: 1,
            },
            Arc::new(AtomicU64::new(0)),
        )
        .expect("open");
        let mut line = sink.buffer();
        assert!(line.is_empty());
        line.reserve(1000);
        line.push_str("first");
        sink.send(line);
        sink.flush();
        let mut reused = None;
        for _ in 0..200 {
            let b = sink.buffer();
            if b.capacity() >= 1000 {
                reused = Some(b);
                break;
            }
            std::thread::sleep(Duration::from_millis(5));
        }
        let reused = reused.expect("the written buffer is handed back");
        assert!(reused.is_empty());
        sink.send("second".to_string());
        sink.flush();
        assert_eq!(fs::read_to_string(&path).expect("log"), "first\nsecond\n");
        let _ = fs::remove_dir_all(&dir);
    }
}
