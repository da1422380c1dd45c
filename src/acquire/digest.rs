//! SHA-256 of downloads: kept up to date while the bytes arrive, on a thread
//! of its own, so a finished download needs no second pass over its file
//! and verifying costs the connection no time.

use std::io::Read;
use std::path::Path;

use sha2::{Digest, Sha256};

/// The SHA-256 of a partial file's first `len` bytes, kept up to date as
/// bytes arrive so a finished download needs no second pass over the file.
#[derive(Default, Clone)]
pub(super) struct PrefixHash {
    hasher: Sha256,
    len: u64,
}

/// Hashes a download's chunks on a thread of its own while they arrive, so
/// verifying costs the connection no time (on two cores or more).
pub(super) struct HashWorker {
    chunks: tokio::sync::mpsc::Sender<bytes::Bytes>,
    thread: std::thread::JoinHandle<PrefixHash>,
}

/// Chunks waiting to be hashed before the download waits for the hash.
const HASH_QUEUE: usize = 64;

impl HashWorker {
    pub(super) fn start(mut hash: PrefixHash) -> HashWorker {
        let (chunks, mut queue) = tokio::sync::mpsc::channel::<bytes::Bytes>(HASH_QUEUE);
        let thread = std::thread::spawn(move || {
            while let Some(chunk) = queue.blocking_recv() {
                hash.update(&chunk);
            }
            hash
        });
        HashWorker { chunks, thread }
    }

    pub(super) async fn hash(&self, chunk: bytes::Bytes) {
        // The thread only stops once the sender is dropped.
        let _ = self.chunks.send(chunk).await;
    }

    /// The hash of every chunk sent; an empty one (read again from disk when
    /// needed) if the thread died.
    pub(super) async fn finish(self) -> PrefixHash {
        let HashWorker { chunks, thread } = self;
        drop(chunks);
        match tokio::task::spawn_blocking(move || thread.join()).await {
            Ok(Ok(hash)) => hash,
            _ => PrefixHash::default(),
        }
    }
}

impl PrefixHash {
    pub(super) fn update(&mut self, bytes: &[u8]) {
        self.hasher.update(bytes);
        self.len += bytes.len() as u64;
    }

    /// Makes the hash cover exactly the first `len` bytes of `part`, reading
    /// them again (off the async threads) when it does not already.
    pub(super) async fn catch_up(&mut self, part: &Path, len: u64) -> std::io::Result<()> {
        if self.len == len {
            return Ok(());
        }
        let part = part.to_owned();
        let hashed = tokio::task::spawn_blocking(move || hash_prefix(&part, len))
            .await
            .map_err(std::io::Error::other)??;
        *self = hashed;
        Ok(())
    }

    pub(super) fn hex(self) -> String {
        self.hasher.finalize().iter().map(|byte| format!("{byte:02x}")).collect()
    }
}

fn hash_prefix(path: &Path, len: u64) -> std::io::Result<PrefixHash> {
    let mut file = std::fs::File::open(path)?.take(len);
    let mut hash = PrefixHash::default();
    let mut buffer = vec![0; 1 << 20];
    loop {
        let read = file.read(&mut buffer)?;
        if read == 0 {
            break;
        }
        hash.update(&buffer[..read]);
    }
    if hash.len != len {
        return Err(std::io::Error::other(format!(
            "{} holds {} bytes, not {len}",
            path.display(),
            hash.len
        )));
    }
    Ok(hash)
}

/// SHA-256 of a file, lower-case hex.
pub fn sha256_file(path: &Path) -> std::io::Result<String> {
    let len = std::fs::metadata(path)?.len();
    Ok(hash_prefix(path, len)?.hex())
}
