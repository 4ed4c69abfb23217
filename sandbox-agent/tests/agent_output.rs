//! A gigabyte of output: cut at the limit, typed `output_truncated`, and the agent's own memory
//! stays flat because the excess is read and dropped, never stored. Its own test binary, so the
//! process's peak RSS belongs to this test alone.

mod common;

use antwort_common::agent_api::ExecStatus;
use common::TestAgent;

/// Peak resident set size of this process (which hosts the agent), in bytes.
fn peak_rss() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").expect("status");
    let kb: u64 = status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .expect("VmHWM");
    kb * 1024
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_gigabyte_of_output_is_truncated() {
    let agent = TestAgent::start_with(|c| c.limits.max_output_bytes = 64 * 1024).await;
    let s = agent.create_session().await;
    let before = peak_rss();
    let code = "import sys\nchunk = 'x' * (1 << 20)\nfor _ in range(1024):\n    sys.stdout.write(chunk)\n'finished'";
    let r = agent.execute_with(&s.id, code, Some(300_000)).await;
    let grown = peak_rss().saturating_sub(before);
    assert_eq!(r.status, ExecStatus::OutputTruncated, "{:?}", (r.status, &r.error, r.duration_ms));
    assert!(r.output_truncated);
    assert_eq!(r.value.as_deref(), Some("'finished'"));
    assert!(r.stdout.starts_with(&"x".repeat(64 * 1024)), "kept output is the first bytes");
    assert!(r.stdout.len() < 64 * 1024 + 200, "kept {} bytes", r.stdout.len());
    assert!(r.stdout.contains("[output truncated"), "the result says so");
    assert!(grown < 64 << 20, "agent peak RSS grew by {grown} bytes for 1 GiB of output");
    // The session is fine afterwards and output accounting starts over.
    let r = agent.execute(&s.id, "print('small')").await;
    assert_eq!((r.status, r.stdout.as_str()), (ExecStatus::Ok, "small\n"));
    agent.stop().await;
}
