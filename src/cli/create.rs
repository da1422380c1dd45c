//! `kitt campaign create` handler: generate, then print or write.

use std::io::Write;
use std::path::Path;

use super::CreateArgs;
use super::campaign::open_existing;
use crate::campaign::create::{CreateError, Generated, failed, results, write_file};
use crate::error::{Exit, KittError, with_causes};

/// `kitt campaign create (--from-results DIR | --from-campaign ID --failed) [-o FILE] [--force]`.
pub fn create(args: &CreateArgs, home: &Path) -> Result<Exit, KittError> {
    let generated = match (&args.from_results, &args.from_campaign) {
        (Some(dir), _) => results::from_results(dir).map_err(error)?,
        (None, Some(id)) => {
            let Some(store) = open_existing(home)? else {
                return Err(error(CreateError::UnknownCampaign(id.clone())));
            };
            match failed::from_campaign(&store, id).map_err(error)? {
                Some(generated) => generated,
                None => {
                    eprintln!("campaign {id} has no failed run; no file written");
                    return Ok(Exit::Success);
                }
            }
        }
        (None, None) => {
            return Err(KittError::Usage("give --from-results or --from-campaign".into()));
        }
    };
    let Generated { text, warnings, keys } = generated;
    for warning in &warnings {
        eprintln!("warning: {warning}");
    }
    match &args.output {
        Some(path) => {
            write_file(path, &text, args.force).map_err(error)?;
            eprintln!("wrote {} ({} run(s))", path.display(), keys.len());
        }
        None => {
            let mut out = std::io::stdout().lock();
            out.write_all(text.as_bytes()).and_then(|()| out.flush()).map_err(KittError::Output)?;
        }
    }
    Ok(Exit::Success)
}

fn error(error: CreateError) -> KittError {
    if let CreateError::Invalid(config) = error {
        return KittError::Config(config);
    }
    if error.is_input() {
        KittError::Usage(with_causes(&error))
    } else {
        KittError::Environment(with_causes(&error))
    }
}
