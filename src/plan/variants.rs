//! Groups a repository's files into quantization variants.
//!
//! A variant is every GGUF file with one quantization label: a single file, or
//! a set of shards (`-00001-of-00003.gguf`), possibly in a sub-folder named
//! after the quant. Its size is the sum of its files; the file an engine loads
//! is the first shard. A shard set with a member missing is kept but marked
//! incomplete, so the plan can say why it will not run. Projectors and
//! importance matrices are not variants.

use std::collections::BTreeMap;

use super::quant::{
    QuantLabel, is_auxiliary_gguf, quant_from_dir_name, quant_from_file_name, shard_index,
};

/// A file with its size, relative to the repository root.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SizedFile {
    /// Path relative to the repository root, `/`-separated.
    pub path: String,
    /// Size in bytes.
    pub size: u64,
}

/// One quantization variant of a GGUF repository.
#[derive(Debug, Clone, PartialEq)]
pub struct GgufVariant {
    /// The quantization label.
    pub label: QuantLabel,
    /// Its files, the file to load first, the rest in shard order.
    pub files: Vec<String>,
    /// Sum of the files' sizes.
    pub size: u64,
    /// For a shard set: (shards present, shards expected).
    pub shards: Option<(u32, u32)>,
    /// Shard numbers that are missing from the set.
    pub missing_shards: Vec<u32>,
    /// Other files with the same label that were not chosen (several single
    /// files in different folders): a sign the directory holds several models.
    pub others: Vec<String>,
}

impl GgufVariant {
    /// Whether every shard is present.
    pub fn is_complete(&self) -> bool {
        self.missing_shards.is_empty()
    }

    /// Whether the variant is split into several files.
    pub fn is_sharded(&self) -> bool {
        self.shards.is_some_and(|(_, total)| total > 1)
    }
}

/// Groups GGUF files into variants, ordered by label.
pub fn gguf_variants<'a>(files: impl IntoIterator<Item = &'a SizedFile>) -> Vec<GgufVariant> {
    let mut groups: BTreeMap<String, Group> = BTreeMap::new();
    for file in files {
        let name = file.path.rsplit('/').next().unwrap_or(&file.path);
        if !name.to_ascii_lowercase().ends_with(".gguf") || is_auxiliary_gguf(name) {
            continue;
        }
        let label = label_for(&file.path, name);
        let group = groups.entry(label.label.clone()).or_insert_with(|| Group::new(label));
        group.add(file, shard_index(name));
    }
    groups.into_values().map(Group::finish).collect()
}

/// The label of a file: its sub-folder's when the folder is named after a
/// quant (`Q4_K_M/…-00001-of-00002.gguf`), else the one in its name.
pub(crate) fn label_for(path: &str, name: &str) -> QuantLabel {
    let parent = path.rsplit('/').nth(1);
    parent.and_then(quant_from_dir_name).unwrap_or_else(|| quant_from_file_name(name))
}

struct Group {
    label: QuantLabel,
    singles: Vec<SizedFile>,
    shards: BTreeMap<u32, SizedFile>,
    total_shards: u32,
}

impl Group {
    fn new(label: QuantLabel) -> Self {
        Group { label, singles: Vec::new(), shards: BTreeMap::new(), total_shards: 0 }
    }

    fn add(&mut self, file: &SizedFile, shard: Option<(u32, u32)>) {
        match shard {
            Some((index, total)) => {
                self.total_shards = self.total_shards.max(total);
                self.shards.insert(index, file.clone());
            }
            None => self.singles.push(file.clone()),
        }
    }

    fn finish(self) -> GgufVariant {
        // A repository that has both a single file and shards for one label
        // (rare) is planned from the single file: it needs no merge.
        let mut singles = self.singles;
        singles.sort_by(|a, b| a.path.cmp(&b.path));
        if !singles.is_empty() {
            let single = singles.remove(0);
            let others = singles.into_iter().map(|file| file.path).collect();
            return GgufVariant {
                label: self.label,
                files: vec![single.path],
                size: single.size,
                shards: None,
                missing_shards: Vec::new(),
                others,
            };
        }
        let missing_shards =
            (1..=self.total_shards).filter(|i| !self.shards.contains_key(i)).collect();
        let present = u32::try_from(self.shards.len()).unwrap_or(u32::MAX);
        GgufVariant {
            label: self.label,
            size: saturating_sum(self.shards.values().map(|file| file.size)),
            files: self.shards.into_values().map(|file| file.path).collect(),
            shards: Some((present, self.total_shards)),
            missing_shards,
            others: Vec::new(),
        }
    }
}

/// Sums sizes without overflowing: a listing with absurd sizes must not wrap
/// to a small number and pass the disk check.
pub fn saturating_sum(sizes: impl IntoIterator<Item = u64>) -> u64 {
    sizes.into_iter().fold(0, u64::saturating_add)
}

/// The safetensors weights of a repository, with their total size.
pub fn safetensors_files<'a>(files: impl IntoIterator<Item = &'a SizedFile>) -> (Vec<String>, u64) {
    let weights: Vec<&SizedFile> = files
        .into_iter()
        .filter(|file| file.path.to_ascii_lowercase().ends_with(".safetensors"))
        // Some repositories also keep the original checkpoint in a sub-folder.
        .filter(|file| !file.path.starts_with("original/"))
        .collect();
    let size = saturating_sum(weights.iter().map(|file| file.size));
    (weights.into_iter().map(|file| file.path.clone()).collect(), size)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn files(list: &[(&str, u64)]) -> Vec<SizedFile> {
        list.iter().map(|(path, size)| SizedFile { path: (*path).into(), size: *size }).collect()
    }

    #[test]
    fn groups_root_shards_into_one_variant_with_summed_size() {
        let listing = files(&[
            ("Model-Q4_K_M-00002-of-00002.gguf", 20),
            ("Model-Q4_K_M-00001-of-00002.gguf", 10),
            ("Model-Q8_0.gguf", 7),
            ("README.md", 1),
        ]);
        let variants = gguf_variants(&listing);
        assert_eq!(variants.len(), 2);
        let q4 = variants.iter().find(|v| v.label.label == "Q4_K_M").unwrap();
        assert_eq!(
            q4.files,
            ["Model-Q4_K_M-00001-of-00002.gguf", "Model-Q4_K_M-00002-of-00002.gguf"]
        );
        assert_eq!(q4.size, 30);
        assert!(q4.is_complete() && q4.is_sharded());
    }

    #[test]
    fn groups_shards_in_a_sub_folder_per_variant() {
        let listing = files(&[
            ("Q4_K_M/Big-Q4_K_M-00001-of-00003.gguf", 1),
            ("Q4_K_M/Big-Q4_K_M-00002-of-00003.gguf", 1),
            ("Q4_K_M/Big-Q4_K_M-00003-of-00003.gguf", 1),
            ("UD-Q2_K_XL/Big-UD-Q2_K_XL-00001-of-00002.gguf", 2),
            ("UD-Q2_K_XL/Big-UD-Q2_K_XL-00002-of-00002.gguf", 2),
        ]);
        let variants = gguf_variants(&listing);
        let labels: Vec<_> = variants.iter().map(|v| v.label.label.as_str()).collect();
        assert_eq!(labels, ["Q4_K_M", "UD-Q2_K_XL"]);
        assert_eq!(variants[0].size, 3);
        assert_eq!(variants[0].files[0], "Q4_K_M/Big-Q4_K_M-00001-of-00003.gguf");
    }

    #[test]
    fn shard_set_with_a_missing_member_is_incomplete() {
        let listing =
            files(&[("M-Q8_0-00001-of-00003.gguf", 1), ("M-Q8_0-00003-of-00003.gguf", 1)]);
        let variants = gguf_variants(&listing);
        assert_eq!(variants[0].missing_shards, [2]);
        assert_eq!(variants[0].shards, Some((2, 3)));
        assert!(!variants[0].is_complete());
    }

    #[test]
    fn projectors_and_importance_matrices_are_not_variants() {
        let listing = files(&[
            ("mmproj-model-f16.gguf", 1),
            ("Model-imatrix.gguf", 1),
            ("Model-Q4_K_M.gguf", 1),
        ]);
        let labels: Vec<_> = gguf_variants(&listing).into_iter().map(|v| v.label.label).collect();
        assert_eq!(labels, ["Q4_K_M"]);
    }

    #[test]
    fn safetensors_weights_exclude_original_checkpoints() {
        let listing = files(&[
            ("model-00001-of-00002.safetensors", 5),
            ("model-00002-of-00002.safetensors", 5),
            ("original/consolidated.safetensors", 9),
            ("config.json", 1),
        ]);
        let (weights, size) = safetensors_files(&listing);
        assert_eq!(weights.len(), 2);
        assert_eq!(size, 10);
    }
}
