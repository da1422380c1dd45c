//! Turning `docker pull` output into progress lines a person can follow.
//!
//! Without a terminal, `docker pull` prints one line per layer state change
//! (`<layer>: Pulling fs layer`, `Waiting`, `Verifying Checksum`, `Download
//! complete`, `Pull complete`, or `Already exists`), then `Digest: …` and
//! `Status: …`. kitt reports how many layers are done whenever that changes,
//! plus the final status, instead of echoing every line.

use std::collections::BTreeMap;

/// Follows one pull.
#[derive(Debug)]
pub struct PullProgress {
    image: String,
    layers: BTreeMap<String, bool>,
    done: usize,
}

impl PullProgress {
    /// A pull of `image` that has printed nothing yet.
    pub fn new(image: &str) -> PullProgress {
        PullProgress { image: image.to_owned(), layers: BTreeMap::new(), done: 0 }
    }

    /// The line announcing the pull.
    pub fn started(&self) -> String {
        format!("pulling image {}", self.image)
    }

    /// Reads one line of `docker pull` output; returns a progress line when
    /// there is news.
    pub fn line(&mut self, line: &str) -> Option<String> {
        let line = line.trim();
        if let Some(status) = line.strip_prefix("Status: ") {
            return Some(format!("pulling image {}: {status}", self.image));
        }
        let (layer, state) = line.split_once(": ")?;
        let is_layer = layer.len() >= 12 && layer.chars().all(|c| c.is_ascii_hexdigit());
        if !is_layer {
            return None;
        }
        let finished = matches!(state, "Pull complete" | "Already exists");
        let known = self.layers.entry(layer.to_owned()).or_insert(false);
        if !finished || *known {
            return None;
        }
        *known = true;
        self.done += 1;
        let total = self.layers.len();
        Some(format!("pulling image {}: {} of {total} layers done", self.image, self.done))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reports_each_finished_layer_and_the_status() {
        let output = "server: Pulling from ggml-org/llama.cpp\n\
                      aaaaaaaaaaaa: Pulling fs layer\n\
                      bbbbbbbbbbbb: Pulling fs layer\n\
                      cccccccccccc: Already exists\n\
                      bbbbbbbbbbbb: Waiting\n\
                      aaaaaaaaaaaa: Verifying Checksum\n\
                      aaaaaaaaaaaa: Download complete\n\
                      aaaaaaaaaaaa: Pull complete\n\
                      bbbbbbbbbbbb: Download complete\n\
                      bbbbbbbbbbbb: Pull complete\n\
                      Digest: sha256:0123\n\
                      Status: Downloaded newer image for ghcr.io/ggml-org/llama.cpp:server\n\
                      ghcr.io/ggml-org/llama.cpp:server\n";
        let mut progress = PullProgress::new("ghcr.io/ggml-org/llama.cpp:server");
        let lines: Vec<String> = output.lines().filter_map(|line| progress.line(line)).collect();
        let image = "pulling image ghcr.io/ggml-org/llama.cpp:server";
        assert_eq!(
            lines,
            [
                format!("{image}: 1 of 3 layers done"),
                format!("{image}: 2 of 3 layers done"),
                format!("{image}: 3 of 3 layers done"),
                format!("{image}: Downloaded newer image for ghcr.io/ggml-org/llama.cpp:server"),
            ]
        );
    }
}
