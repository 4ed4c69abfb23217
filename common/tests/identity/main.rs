//! Real mTLS handshakes over loopback TCP for both identity sources (PEM files and the SPIFFE
//! Workload API), rotation while connections continue, and every refusal the policy promises.

mod authorize;
mod dev_ca_bin;
mod fake_workload_api;
mod files;
mod refusals;
mod support;
mod workload_api;
