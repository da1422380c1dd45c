//! "Did you mean" suggestions for misspelt keys and names.

/// The candidate closest to `given`, if it is close enough to be a likely typo.
pub fn did_you_mean<'a>(
    given: &str,
    candidates: impl IntoIterator<Item = &'a str>,
) -> Option<&'a str> {
    let given_lower = given.to_ascii_lowercase();
    let mut best: Option<(&str, f64)> = None;
    for candidate in candidates {
        let score = strsim::jaro_winkler(&given_lower, &candidate.to_ascii_lowercase());
        let close_by_edits =
            strsim::levenshtein(&given_lower, &candidate.to_ascii_lowercase()) <= 2;
        let is_close = score >= 0.85 || (close_by_edits && candidate.len() > 3);
        if is_close && best.is_none_or(|(_, best_score)| score > best_score) {
            best = Some((candidate, score));
        }
    }
    best.map(|(candidate, _)| candidate)
}

#[cfg(test)]
mod tests {
    use super::did_you_mean;

    #[test]
    fn suggests_near_misses() {
        let keys = ["reserve_gb", "storage_path", "cleanup_after_run"];
        assert_eq!(did_you_mean("reserve", keys), Some("reserve_gb"));
        assert_eq!(did_you_mean("resrve_gb", keys), Some("reserve_gb"));
        assert_eq!(did_you_mean("storagepath", keys), Some("storage_path"));
    }

    #[test]
    fn stays_quiet_for_unrelated_words() {
        assert_eq!(did_you_mean("banana", ["reserve_gb", "storage_path"]), None);
    }

    #[test]
    fn matches_engine_names_regardless_of_case() {
        assert_eq!(did_you_mean("llama.cpp", ["llama_cpp", "ollama", "vllm"]), Some("llama_cpp"));
        assert_eq!(did_you_mean("VLLM", ["llama_cpp", "ollama", "vllm"]), Some("vllm"));
    }
}
