//! How an Ollama tag becomes a candidate run for an `ollama` engine: the
//! store its server pulls into (whose free space the disk check measures),
//! whether that store has the tag already (then nothing is downloaded), and
//! the tags Ollama cannot pull or serve here, each blocked with its reason:
//!
//! - a tag the library or registry does not know (from discovery);
//! - a cloud model (a `-cloud` tag, or a manifest without model weights):
//!   Ollama runs it on its own servers, so there is nothing to benchmark here;
//! - a Hugging Face tag (`hf.co/org/repo:QUANT`) whose quant is a sharded
//!   GGUF, or that the repository does not have: Ollama pulls single-file
//!   GGUFs only (sizes come from the repository's listing);
//! - with `KITT_OFFLINE`, a tag a native store does not have: kitt does not
//!   ask Ollama to pull it.
//!
//! A Docker-mode server keeps its models in a volume kitt cannot look into,
//! so its tags are never known to be present and its free space is not
//! measured (the plan warns).

use super::discover::{Discovery, RepoLookup, TagVariant, hub_tag};
use super::matrix::{Candidate, Download, PlanEnv, Target};
use super::variants::gguf_variants;
use crate::config::EngineSpec;
use crate::engine::ollama::store::{Location, location};

/// The quant Hugging Face serves Ollama when a tag names none.
const HUB_DEFAULT_QUANT: &str = "Q4_K_M";

/// The candidate run of `tag` on the Ollama `engine`.
pub(super) fn tag_candidate(
    tag: &TagVariant,
    engine: &EngineSpec,
    discovery: &Discovery,
    env: &PlanEnv,
) -> Candidate {
    let store = location(&engine.config, &env.ollama_dir);
    let present = matches!(&store, Location::Dir(dir) if (env.has_ollama_tag)(dir, &tag.full));
    let mut candidate = Candidate::new(tag.label.clone(), format!("ollama:{}", tag.full));
    candidate.known_size = tag.size;
    let mut blocked = tag.missing.clone();
    if let Some((size, reason)) = hub_variant(&tag.full, discovery) {
        candidate.known_size = candidate.known_size.or(size);
        blocked = blocked.or(reason);
    }
    if discovery.ollama_offline && !present && blocked.is_none() {
        blocked = match &store {
            Location::Dir(dir) => Some(format!(
                "`{}` is not in the Ollama store {} and KITT_OFFLINE is on: kitt does not ask \
                 Ollama to pull it",
                tag.full,
                dir.display()
            )),
            Location::Volume(_) => None,
        };
    }
    let bytes = if present { Some(0) } else { candidate.known_size };
    let id = format!("{store}|{}", tag.full);
    candidate.download = Some(Download { id, bytes, target: Target::Ollama(store) });
    candidate.blocked = blocked;
    candidate
}

/// For a Hugging Face tag whose repository discovery listed: the size of the
/// quant it names, and why Ollama cannot pull it.
fn hub_variant(full: &str, discovery: &Discovery) -> Option<(Option<u64>, Option<String>)> {
    let (repo, quant) = hub_tag(full)?;
    let Some(RepoLookup::Found(info)) = discovery.repos.get(&repo) else { return None };
    let wanted = quant.as_deref().unwrap_or(HUB_DEFAULT_QUANT);
    let variants = gguf_variants(&info.files);
    let same = |label: &str| label.eq_ignore_ascii_case(wanted);
    let Some(variant) = variants.iter().find(|v| same(&v.label.label) || same(&v.label.base))
    else {
        let reason = format!("`{repo}` has no `{wanted}` GGUF for Ollama to pull");
        return quant.is_some().then_some((None, Some(reason)));
    };
    let reason = variant.shards.filter(|_| variant.is_sharded()).map(|(_, total)| {
        format!(
            "Ollama cannot pull a sharded GGUF: `{wanted}` of `{repo}` is split into {total} \
             files; merge them with `llama-gguf-split --merge`, or choose a quant in one file"
        )
    });
    Some((Some(variant.size), reason))
}
