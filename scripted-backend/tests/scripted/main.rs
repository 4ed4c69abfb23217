//! Drives the scripted backend over real HTTP (reqwest) and the real binary.
//! One test binary with modules, to link reqwest once.

mod binary;
mod failures;
mod recording;
mod streaming;
mod support;
mod text;
mod tools;
