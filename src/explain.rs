//! `flowgraph explain ADDR`: which source names an address, since when, and the alternatives.
//!
//! From a recording (`--input`: replayed through the job with the same naming flags as
//! `replay`, explained at its end) or from a running live view (`--url`: its
//! `GET /api/explain/ADDR`, answered by the job in that process).

use crate::cli::ExplainArgs;
use crate::replay::{job_config, replay_stream};
use anyhow::{bail, Context};
use flowgraph_pipeline::{Job, NameExplanation};
use flowgraph_sources::recording;

pub fn run(args: ExplainArgs) -> anyhow::Result<()> {
    let explanation: NameExplanation = match (&args.input, &args.url) {
        (Some(input), _) => {
            let config = job_config(&args.query)?;
            let mut naming = crate::naming::start_for(args.query.config.as_ref(), &args.naming, &config)?;
            let reader = recording::open(input)?;
            let mut job = Job::new(config).map_err(anyhow::Error::msg)?;
            let bar = indicatif::ProgressBar::hidden();
            let source = input.display().to_string();
            replay_stream(reader, &source, &mut job, &mut naming, false, None, &bar)?;
            job.explain(args.addr)
        }
        (None, Some(url)) => {
            if args.query.config.is_some() || !args.query.given().is_empty() || !args.naming.given().is_empty() {
                bail!("--url asks a running live view, whose query and names are its own: the query and naming flags only apply with --input");
            }
            let url = format!("{}/api/explain/{}", url.trim_end_matches('/'), args.addr);
            let mut request = ureq::get(&url);
            if let Some(token) = &args.token {
                request = request.header("Authorization", &format!("Bearer {token}"));
            }
            let mut response = request.call().with_context(|| format!("asking {url}"))?;
            let body = response.body_mut().read_to_string().with_context(|| format!("reading {url}"))?;
            serde_json::from_str(&body).with_context(|| format!("{url} answered {body:?}"))?
        }
        (None, None) => bail!("give --input FILE or --url URL"),
    };
    if args.json {
        println!("{}", serde_json::to_string_pretty(&explanation)?);
    } else {
        print!("{explanation}");
    }
    Ok(())
}
