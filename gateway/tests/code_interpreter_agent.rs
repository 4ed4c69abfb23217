//! The code interpreter executor against a real `antwort-sandbox-agent` process (real Python,
//! real mTLS with dev-CA SVIDs), without a pool manager (`with_static_agent`): outputs, state,
//! images, typed failures, identity refusals, ownership and idle expiry.

use std::time::{Duration, Instant};

use antwort_common::identity::{PeerPolicy, PeerRule};
use antwort_gateway::openresponses::code_interpreter::{CallOutput, CallStatus, Naming};
use antwort_gateway::tools::code_interpreter::CodeInterpreter;
use antwort_gateway::tools::code_interpreter::config::Limits;
use antwort_gateway::tools::{
    ContainerBinding, Owner, ToolCall, ToolContext, ToolExecutor, ToolFailure, ToolItem,
    ToolOutcome,
};
use tokio_util::sync::CancellationToken;

mod support;

use support::agent::{AGENT_ID, Agent, GATEWAY_ID, PATIENCE, TRUST_DOMAIN};

fn interpreter(agent: &Agent, limits: Limits) -> CodeInterpreter {
    CodeInterpreter::with_static_agent(
        agent.source(GATEWAY_ID),
        agent.claim(AGENT_ID),
        PeerPolicy::new([PeerRule::prefix(TRUST_DOMAIN, "/ns/sandboxes/").expect("rule")]),
        limits,
        Naming::Openai,
    )
}

fn owner(user: &str) -> Owner {
    Owner { tenant: "t".into(), user: user.into() }
}

fn ctx(user: &str, binding: ContainerBinding) -> ToolContext {
    ToolContext {
        owner: owner(user),
        container: binding,
        cancel: CancellationToken::new(),
        progress: None,
        memory_limit: None,
    }
}

async fn run(ci: &CodeInterpreter, ctx: &ToolContext, code: &str) -> ToolOutcome {
    let call = ToolCall {
        call_id: "call_1".into(),
        name: "python".into(),
        arguments: serde_json::json!({ "code": code }).to_string(),
    };
    tokio::time::timeout(PATIENCE, ci.execute(ctx, &call, "ci_1")).await.expect("in time")
}

fn item(
    outcome: &ToolOutcome,
) -> &antwort_gateway::openresponses::code_interpreter::CodeInterpreterCall {
    match &outcome.item {
        ToolItem::CodeInterpreter(call) => call,
    }
}

fn logs(outcome: &ToolOutcome) -> String {
    item(outcome)
        .outputs
        .iter()
        .filter_map(|o| match o {
            CallOutput::Logs { logs } => Some(logs.as_str()),
            CallOutput::Image { .. } => None,
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn runs_code_keeps_state_and_returns_images_and_files() {
    let agent = Agent::start().await;
    let ci = interpreter(&agent, Limits::default());
    let alice = ctx("alice", ContainerBinding::Auto { current: None });

    let first = run(&ci, &alice, "print(1)\nx = 41").await;
    assert_eq!(first.failure, None, "{first:?}");
    assert_eq!(item(&first).status, CallStatus::Completed);
    assert_eq!(logs(&first), "1\n");
    assert!(first.output_for_model.starts_with("1\n"), "{}", first.output_for_model);
    let container = first.container_id.clone().expect("a container");
    assert!(container.starts_with("cntr_"), "{container}");
    assert_eq!(item(&first).container_id, container);

    // The same container (as the engine passes it along the chain) keeps variables.
    let again = ctx("alice", ContainerBinding::Auto { current: Some(container.clone()) });
    let second = run(&ci, &again, "x + 1").await;
    assert_eq!(logs(&second), "42");
    assert_eq!(second.container_id.as_deref(), Some(container.as_str()));

    let plot = "import matplotlib.pyplot as plt\nplt.plot([1, 2, 3], [1, 4, 9])\nplt.savefig('plot.png')\nplt.show()";
    let third = run(&ci, &again, plot).await;
    assert_eq!(third.failure, None, "{third:?}");
    let url = item(&third)
        .outputs
        .iter()
        .find_map(|o| match o {
            CallOutput::Image { url } => Some(url.clone()),
            CallOutput::Logs { .. } => None,
        })
        .expect("an image output");
    let data = url.strip_prefix("data:image/png;base64,").expect("a PNG data URL");
    use base64::Engine as _;
    let png = base64::engine::general_purpose::STANDARD.decode(data).expect("base64");
    assert!(png.starts_with(b"\x89PNG\r\n\x1a\n"));
    assert_eq!(third.files.len(), 1, "{:?}", third.files);
    assert_eq!(third.files[0].path, "plot.png");
    assert!(third.files[0].file_id.starts_with("cfile_") && third.files[0].size_bytes > 0);
    assert!(third.output_for_model.contains("plot.png"));

    // An exception is a completed call whose logs carry the traceback.
    let err = run(&ci, &again, "1 / 0").await;
    assert_eq!((item(&err).status, err.failure.clone()), (CallStatus::Completed, None));
    assert!(logs(&err).contains("ZeroDivisionError"), "{}", logs(&err));

    // Another owner cannot use alice's container: not found, as a failed call.
    let bob = ctx("bob", ContainerBinding::Explicit(container.clone()));
    let refused = run(&ci, &bob, "x").await;
    assert_eq!(refused.failure, Some(ToolFailure::ContainerNotFound { id: container.clone() }));
    assert_eq!(item(&refused).status, CallStatus::Failed);
    assert!(ci.check_container(&owner("bob"), &container).is_err());
    assert!(ci.check_container(&owner("alice"), &container).is_ok());
    // Bob's auto container is a different one, without alice's variables.
    let bobs =
        run(&ci, &ctx("bob", ContainerBinding::Auto { current: Some(container.clone()) }), "x")
            .await;
    assert_ne!(bobs.container_id.as_deref(), Some(container.as_str()));
    assert!(logs(&bobs).contains("NameError"), "{}", logs(&bobs));

    // Bad arguments go back to the model.
    let call =
        ToolCall { call_id: "c".into(), name: "python".into(), arguments: "{\"src\": 1}".into() };
    let bad = ci.execute(&again, &call, "ci_2").await;
    assert_eq!(bad.failure.as_ref().map(ToolFailure::code), Some("invalid_arguments"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failures_are_typed() {
    let agent = Agent::start().await;
    let limits =
        Limits { exec_timeout: Duration::from_secs(2), max_logs_bytes: 1000, ..Limits::default() };
    let ci = interpreter(&agent, limits);
    let c = ctx("alice", ContainerBinding::Auto { current: None });
    let first = run(&ci, &c, "y = 5").await;
    let c = ctx("alice", ContainerBinding::Auto { current: first.container_id.clone() });

    let slow = run(&ci, &c, "import time\ntime.sleep(30)").await;
    assert!(matches!(slow.failure, Some(ToolFailure::Timeout { .. })), "{slow:?}");
    assert_eq!(item(&slow).status, CallStatus::Incomplete);
    assert!(slow.output_for_model.contains("timeout"), "{}", slow.output_for_model);

    let oom = run(&ci, &c, "b = bytearray(3 * 1024 ** 3)").await;
    assert_eq!(oom.failure, Some(ToolFailure::OutOfMemory), "{oom:?}");

    let loud = run(&ci, &c, "print('x' * 5000)").await;
    assert_eq!(loud.failure, Some(ToolFailure::OutputTruncated { limit_bytes: 1000 }), "{loud:?}");
    assert!(logs(&loud).len() <= 1000);
    // The client's logs say why, as the model's text does, within the limit.
    assert!(logs(&loud).starts_with("xxxx"), "{loud:?}");
    assert!(
        logs(&loud)
            .ends_with("[output_truncated] The output exceeded 1000 bytes and was truncated."),
        "{loud:?}"
    );
    assert!(logs(&slow).contains("\n[timeout] The code was stopped after 2."), "{slow:?}");

    // The session still works after all that.
    let after = run(&ci, &c, "print('ok')").await;
    assert_eq!(logs(&after), "ok\n", "{after:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cancellation_interrupts_the_running_code() {
    let agent = Agent::start().await;
    let ci = interpreter(&agent, Limits::default());
    let c = ctx("alice", ContainerBinding::Auto { current: None });
    let first = run(&ci, &c, "n = 0").await;
    let c = ctx("alice", ContainerBinding::Auto { current: first.container_id.clone() });
    let cancel = c.cancel.clone();
    let started = Instant::now();
    tokio::spawn(async move {
        tokio::time::sleep(Duration::from_millis(800)).await;
        cancel.cancel();
    });
    let cancelled =
        run(&ci, &c, "import time\nwhile True:\n    n += 1\n    time.sleep(0.01)").await;
    assert_eq!(cancelled.failure, Some(ToolFailure::Cancelled));
    assert!(started.elapsed() < Duration::from_secs(30));
    // The interpreter was interrupted, not left spinning: the next call runs at once.
    let c2 = ctx("alice", ContainerBinding::Auto { current: first.container_id.clone() });
    let next = run(&ci, &c2, "n > 0").await;
    assert_eq!(logs(&next), "True", "{next:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn identity_is_checked_and_a_dead_agent_is_unavailable() {
    let agent = Agent::start().await;
    // The claim names a different agent ID than the agent presents: the handshake is refused.
    let wrong = CodeInterpreter::with_static_agent(
        agent.source(GATEWAY_ID),
        agent.claim("spiffe://antwort.test/ns/sandboxes/sa/other-agent"),
        PeerPolicy::new([PeerRule::prefix(TRUST_DOMAIN, "/ns/sandboxes/").expect("rule")]),
        Limits::default(),
        Naming::Openai,
    );
    let out = run(&wrong, &ctx("a", ContainerBinding::Auto { current: None }), "1").await;
    assert!(matches!(out.failure, Some(ToolFailure::SandboxUnavailable { .. })), "{out:?}");
    assert_eq!(item(&out).status, CallStatus::Failed);
    // A claim naming an ID outside agent_spiffe_ids is refused before any connection.
    let outside = CodeInterpreter::with_static_agent(
        agent.source(GATEWAY_ID),
        agent.claim(AGENT_ID),
        PeerPolicy::new([PeerRule::prefix(TRUST_DOMAIN, "/ns/elsewhere/").expect("rule")]),
        Limits::default(),
        Naming::Openai,
    );
    let out = run(&outside, &ctx("a", ContainerBinding::Auto { current: None }), "1").await;
    match out.failure {
        Some(ToolFailure::SandboxUnavailable { reason }) => {
            assert!(reason.contains("refused"), "{reason}")
        }
        other => panic!("expected sandbox_unavailable, got {other:?}"),
    }
    // A gateway SVID the agent does not allow: refused too.
    let stranger = CodeInterpreter::with_static_agent(
        agent.source("spiffe://antwort.test/ns/antwort/sa/stranger"),
        agent.claim(AGENT_ID),
        PeerPolicy::new([PeerRule::prefix(TRUST_DOMAIN, "/ns/sandboxes/").expect("rule")]),
        Limits::default(),
        Naming::Openai,
    );
    let out = run(&stranger, &ctx("a", ContainerBinding::Auto { current: None }), "1").await;
    assert!(matches!(out.failure, Some(ToolFailure::SandboxUnavailable { .. })), "{out:?}");

    // Agent down: a live container's next call is sandbox_unavailable, not a hang or a panic.
    let ci = interpreter(
        &agent,
        Limits { request_timeout: Duration::from_secs(5), ..Limits::default() },
    );
    let c = ctx("a", ContainerBinding::Auto { current: None });
    let ok = run(&ci, &c, "1").await;
    assert_eq!(ok.failure, None, "{ok:?}");
    drop(agent);
    let c = ctx("a", ContainerBinding::Auto { current: ok.container_id.clone() });
    let down = run(&ci, &c, "1").await;
    assert!(matches!(down.failure, Some(ToolFailure::SandboxUnavailable { .. })), "{down:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_containers_expire_and_end_their_session() {
    let agent = Agent::start().await;
    let limits = Limits { idle_timeout: Duration::from_millis(500), ..Limits::default() };
    let ci = interpreter(&agent, limits);
    let c = ctx("alice", ContainerBinding::Auto { current: None });
    let first = run(&ci, &c, "z = 1").await;
    let id = first.container_id.clone().expect("container");
    assert_eq!(ci.reap_expired().await, 0, "not idle yet");
    tokio::time::sleep(Duration::from_millis(700)).await;
    assert_eq!(ci.reap_expired().await, 1);
    assert!(ci.containers().is_empty());
    assert!(ci.check_container(&owner("alice"), &id).is_err());
    // The agent session is gone too.
    let gw = antwort_common::identity::mtls_client(
        agent.source(GATEWAY_ID),
        PeerPolicy::exact([AGENT_ID]).expect("policy"),
    )
    .expect("client");
    let sessions: serde_json::Value = gw
        .get(format!("{}/v1/sessions", agent.api))
        .send()
        .await
        .expect("list")
        .json()
        .await
        .expect("json");
    assert_eq!(sessions["sessions"].as_array().map(Vec::len), Some(0), "{sessions}");
    // An auto binding to the expired container gets a fresh one.
    let c = ctx("alice", ContainerBinding::Auto { current: Some(id.clone()) });
    let fresh = run(&ci, &c, "'z' in globals()").await;
    assert_ne!(fresh.container_id.as_deref(), Some(id.as_str()));
    assert_eq!(logs(&fresh), "False");
}
