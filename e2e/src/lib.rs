//! Whole-system tests for antwort: what ships (images, the Helm chart, kustomize overlays) and,
//! later, the binaries working together. The tests live in `tests/`; this library holds what
//! they share.
//!
//! # Layout
//!
//! - [`workspace`]: the workspace root and the workspace's own binaries (built on demand).
//! - [`tools`]: external tools (helm, kubectl, kubernetes-validate, hadolint) found where
//!   `scripts/install-test-tools.sh` put them; a missing tool fails the test, never skips it.
//! - [`manifests`]: multi-document YAML -> JSON values, lookups by kind and name, pod specs.
//! - [`chart`]: `helm template`/`kubectl kustomize` runs and offline validation (Kubernetes
//!   schemas for built-in kinds, the CRD's own schema for `SandboxPool`, `e2e/schemas/` for the
//!   third-party kinds the chart may render).
//! - [`security`]: the hardening every rendered pod spec must carry, as a list of problems.
//! - [`kube_env`]: a real kube-apiserver + etcd from `scripts/kube-test-env.sh`, stopped on drop,
//!   and a kubectl bound to it.
//! - [`service`]: one workspace binary as a test's child process, its lines kept, killed on drop.
//! - [`antwort_up`]: the whole stack by one command (`antwort up`) as a child process, its
//!   "ready" block parsed, and a /proc scan for any process of the stack left behind.
//! - [`http`]: a small blocking JSON client (reqwest) for synchronous tests.
//!
//! Data flows one way: a test renders manifests with [`chart`], reads them with [`manifests`],
//! checks them with [`security`] and [`chart::validate_offline`], and applies them to a
//! [`kube_env::KubeEnv`].
//!
//! Test files: `tests/delivery_*.rs` cover issue 7 (delivery); `tests/openai_sdk.rs` drives a
//! `antwort up` with the official OpenAI Python SDK (`python/`); `tests/antwort_up.rs` runs the
//! one-machine stack through [`antwort_up`] and `tests/code_interpreter_stack.rs` runs
//! code_interpreter through it (requests, chains, hostile code, pool exhaustion, mTLS refusals);
//! `benches/code_interpreter_stack.rs` measures the tool's overhead there.

#![forbid(unsafe_code)]

pub mod antwort_up;
pub mod chart;
pub mod http;
pub mod kube_env;
pub mod manifests;
pub mod security;
pub mod service;
pub mod tools;
pub mod workspace;
