//! The spawner: `antwort-sandbox-agent spawner`, the second process of a sandbox pod. It runs in
//! the `sandbox` container as a uid of its own and starts interpreters for the agent, so user
//! code never shares the agent's uid (it cannot read the agent's SVID key or signal the agent),
//! and neither process needs root or a capability.
//!
//! Data flow: the agent connects to a Unix socket (one connection per interpreter), the spawner
//! checks the peer's uid (`SO_PEERCRED`), starts the driver under the same confinement the agent
//! applies when it forks (`interpreter::process::launch_local`), and hands the driver's pipe
//! ends back with `SCM_RIGHTS`. From then on the agent talks to the driver directly over those
//! pipes; the connection only carries signals (interrupt, kill), OOM counts and the exit status.
//! Closing the connection kills the driver's process group.
//!
//! - [`wire`]: the frames on the socket.
//! - `fds`: passing file descriptors (the module's only `unsafe`).
//! - [`server`]: the spawner itself.
//! - [`client`]: the agent's side.

pub mod client;
mod fds;
pub mod server;
pub mod wire;
