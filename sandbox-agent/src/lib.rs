//! antwort's sandbox agent: the small server inside every sandbox image. One binary; config
//! decides which capabilities (code execution, file search, web search) it serves.
//!
//! # Layout
//! Requests flow top to bottom; nothing below `api` knows about HTTP, nothing above `interpreter`
//! knows about processes.
//! - [`server`]: startup phases, mTLS API listener + plain admin listener, warm-up, drain.
//! - [`api`]: routes, JSON extractor, SSE; errors become the envelope in [`error`].
//! - [`session`]: [`session::Sessions`]: create/execute/interrupt/restart/delete, typed results,
//!   metrics, file operations per session.
//! - [`workspace`]: traversal-proof file access (lexical checks + `openat(O_NOFOLLOW)` walks),
//!   uploads that land atomically, change detection.
//! - [`interpreter`]: one Python driver process (`driver.py`), its pipes and the execute loop
//!   (deadline, SIGINT, kill, output limit, end markers); `interpreter::process` starts it by
//!   forking or through the spawner.
//! - [`spawner`]: `antwort-sandbox-agent spawner`, the pod's second process: starts drivers as a
//!   uid of its own and passes their pipes to the agent over a Unix socket (`SCM_RIGHTS`).
//! - [`sandbox`]: the confinement applied before exec: uid/gid drop, rlimits, cgroups (v1/v2),
//!   seccomp, network namespace, umask. The crate's only `unsafe` is `sandbox::child` (the
//!   `pre_exec` hook) and `spawner::fds` (descriptors received over the socket).
//! - [`metrics`]: Prometheus registry and text rendering.
//! - [`config`]: the YAML + `ANTWORT_*` configuration and its validation.
//! - [`search`]: file search (index + ranked chunks) and web search (providers, offline mode).
//!
//! Wire types live in `antwort_common::agent_api` (and `search_api`), shared with the callers.

#![deny(unsafe_code)]

pub mod api;
pub mod config;
pub mod error;
pub mod interpreter;
pub mod metrics;
pub mod sandbox;
pub mod search;
pub mod server;
pub mod session;
pub mod spawner;
pub mod workspace;

pub use config::Config;
pub use error::{Error, Result};
