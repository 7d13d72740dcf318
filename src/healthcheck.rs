//! `seatwatch healthcheck`: asks a service's `/readyz` (or any URL) and exits 0 only on a
//! 2xx answer, for container healthchecks that have no shell or curl in the image.

use std::time::Duration;

use anyhow::Context;

#[derive(Debug, clap::Args)]
pub struct HealthcheckArgs {
    /// The endpoint to ask, e.g. `http://127.0.0.1:9101/readyz`.
    #[arg(long, default_value = "http://127.0.0.1:9101/readyz")]
    pub url: String,
    /// Seconds to wait for the answer.
    #[arg(long, default_value_t = 3)]
    pub timeout_secs: u64,
}

pub async fn run(args: HealthcheckArgs) -> anyhow::Result<()> {
    let client = reqwest::Client::builder()
        .timeout(Duration::from_secs(args.timeout_secs))
        .build()
        .context("building the HTTP client")?;
    let response = client.get(&args.url).send().await.map_err(|error| {
        // reqwest's own text ("error sending request") hides the cause: say the chain.
        let error = error.without_url();
        let mut cause = error.to_string();
        let mut source = std::error::Error::source(&error);
        while let Some(inner) = source {
            cause.push_str(&format!(": {inner}"));
            source = inner.source();
        }
        if error.is_builder() {
            anyhow::anyhow!(
                "{} is not a usable URL ({cause}); give it as http://host:port/readyz",
                args.url
            )
        } else {
            anyhow::anyhow!(
                "{} did not answer: {cause}; is the service running and listening there?",
                args.url
            )
        }
    })?;
    let status = response.status();
    if status.is_success() {
        return Ok(());
    }
    let body = response.text().await.unwrap_or_default();
    anyhow::bail!("{} answered {status}: {}", args.url, body.trim())
}
