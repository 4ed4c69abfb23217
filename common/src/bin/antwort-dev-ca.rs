//! `antwort-dev-ca`: mints a development trust bundle and X.509-SVIDs into a folder, in the layout
//! antwort's file identity source reads. For the local stack only; never for production.
//!
//! ```text
//! antwort-dev-ca --dir dev/identity --trust-domain antwort.local \
//!     --svid gateway=spiffe://antwort.local/ns/antwort/sa/gateway \
//!     --svid agent=spiffe://antwort.local/ns/antwort-sandboxes/sa/sandbox-agent
//! ```
//! writes `dev/identity/ca.crt`, `ca.key` (kept and reused on later runs) and
//! `dev/identity/gateway/{tls.crt,tls.key,ca.crt}`, `dev/identity/agent/...`.

#![forbid(unsafe_code)]

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use antwort_common::identity::dev_ca::{DevCa, Validity};
use clap::Parser;

/// Mint a development trust bundle and SVIDs.
#[derive(Debug, Parser)]
#[command(name = "antwort-dev-ca", version)]
struct Args {
    /// Output folder: the CA goes here, each SVID into a subfolder named after it.
    #[arg(long)]
    dir: PathBuf,
    /// The trust domain, e.g. `antwort.local`.
    #[arg(long, default_value = "antwort.local")]
    trust_domain: String,
    /// `NAME=SPIFFE_ID`: write an SVID for SPIFFE_ID into DIR/NAME/. Repeatable.
    #[arg(long = "svid", value_name = "NAME=SPIFFE_ID")]
    svids: Vec<String>,
    /// SVID lifetime in hours.
    #[arg(long, default_value_t = 24)]
    ttl_hours: u64,
    /// Mint already-expired SVIDs (to test refusal).
    #[arg(long)]
    expired: bool,
}

fn main() -> ExitCode {
    let args = Args::parse();
    match run(&args) {
        Ok(()) => ExitCode::SUCCESS,
        Err(message) => {
            eprintln!("antwort-dev-ca: {message}");
            ExitCode::FAILURE
        }
    }
}

fn run(args: &Args) -> Result<(), String> {
    let ca = DevCa::load_or_create(&args.dir, &args.trust_domain).map_err(|e| e.to_string())?;
    println!("trust bundle: {}", args.dir.join("ca.crt").display());
    let validity = if args.expired {
        Validity::expired()
    } else {
        Validity::for_next(Duration::from_secs(args.ttl_hours.saturating_mul(3600)))
    };
    for svid in &args.svids {
        let (name, id) = svid
            .split_once('=')
            .filter(|(name, _)| !name.is_empty() && !name.contains(['/', '.']))
            .ok_or_else(|| {
                format!("--svid {svid:?}: expected NAME=SPIFFE_ID (NAME without / or .)")
            })?;
        let dir = args.dir.join(name);
        ca.mint_with(id, validity)
            .and_then(|s| s.write_to(&dir))
            .map_err(|e| format!("{id}: {e}"))?;
        println!("{id}: {}", dir.display());
    }
    Ok(())
}
