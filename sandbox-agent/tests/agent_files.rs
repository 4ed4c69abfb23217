//! Workspace files over mTLS: upload, list, download, delete, change reporting, and refusals
//! (traversal, symlinks, oversize) that change nothing.

mod common;

use antwort_common::agent_api::{ExecStatus, FileChangeKind, FileInfo, FileList};
use antwort_common::error::ErrorEnvelope;
use common::TestAgent;

async fn listing(agent: &TestAgent, id: &str) -> Vec<(String, u64)> {
    let list: FileList = agent
        .client
        .get(agent.url(&format!("/v1/sessions/{id}/files")))
        .send()
        .await
        .expect("list")
        .json()
        .await
        .expect("json");
    list.files.into_iter().map(|f| (f.path, f.size_bytes)).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn upload_list_download_delete() {
    let agent = TestAgent::start().await;
    let s = agent.create_session().await;
    let url = |p: &str| agent.url(&format!("/v1/sessions/{}/files/{p}", s.id));

    let r = agent.client.put(url("data/in.csv")).body("a,b\n1,2\n").send().await.expect("upload");
    assert_eq!(r.status(), 201);
    let info: FileInfo = r.json().await.expect("json");
    assert_eq!((info.path.as_str(), info.size_bytes), ("data/in.csv", 8));

    // The code sees it, as its own (the sandbox user may write next to it).
    let r = agent
        .execute(&s.id, "rows = open('data/in.csv').read().splitlines()\nopen('data/out.txt', 'w').write(str(len(rows)))\nrows")
        .await;
    assert_eq!(r.status, ExecStatus::Ok, "{r:?}");
    assert_eq!(r.value.as_deref(), Some("['a,b', '1,2']"));
    let changes: Vec<_> =
        r.files.iter().map(|f| (f.path.as_str(), f.change, f.size_bytes)).collect();
    assert_eq!(changes, vec![("data/out.txt", FileChangeKind::Created, 1)]);

    let r = agent
        .execute(&s.id, "import os\nos.remove('data/in.csv')\nopen('data/out.txt', 'a').write('!')")
        .await;
    let changes: Vec<_> = r.files.iter().map(|f| (f.path.as_str(), f.change)).collect();
    assert_eq!(
        changes,
        vec![("data/in.csv", FileChangeKind::Deleted), ("data/out.txt", FileChangeKind::Modified)]
    );

    assert_eq!(listing(&agent, &s.id).await, vec![("data/out.txt".to_string(), 2)]);
    let r = agent.client.get(url("data/out.txt")).send().await.expect("download");
    assert_eq!(r.status(), 200);
    assert_eq!(r.bytes().await.expect("bytes").as_ref(), b"2!");

    let r = agent.client.delete(url("data/out.txt")).send().await.expect("delete");
    assert_eq!(r.status(), 204);
    assert!(listing(&agent, &s.id).await.is_empty());
    let r = agent.client.get(url("data/out.txt")).send().await.expect("download");
    assert_eq!(r.status(), 404);
    let envelope: ErrorEnvelope = r.json().await.expect("envelope");
    assert_eq!(envelope.error.code, "file_not_found");
    agent.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn traversal_symlinks_and_oversize_are_refused_and_change_nothing() {
    let agent = TestAgent::start_with(|c| c.limits.max_upload_bytes = 1024).await;
    let s = agent.create_session().await;
    let base = format!("{}/v1/sessions/{}/files/", agent.base, s.id);
    agent.client.put(format!("{base}keep.txt")).body("original").send().await.expect("upload");
    // The code plants a symlink to a directory outside the workspace.
    let outside = tempfile::tempdir().expect("tempdir");
    std::fs::write(outside.path().join("secret"), "s3cret").expect("write");
    let code =
        format!("import os\nos.symlink({:?}, 'escape')", outside.path().display().to_string());
    assert_eq!(agent.execute(&s.id, &code).await.status, ExecStatus::Ok);

    let cases: Vec<(reqwest::RequestBuilder, u16, &str)> = vec![
        (agent.client.get(format!("{base}..%2F..%2Fetc%2Fpasswd")), 400, "path_not_allowed"),
        (agent.client.get(format!("{base}a/..%2F..%2F..%2Fetc%2Fpasswd")), 400, "path_not_allowed"),
        (agent.client.put(format!("{base}%2Fetc%2Fevil")).body("x"), 400, "path_not_allowed"),
        (agent.client.put(format!("{base}sub/..%2F..%2Fevil")).body("x"), 400, "path_not_allowed"),
        (agent.client.get(format!("{base}escape/secret")), 400, "path_not_allowed"),
        (agent.client.put(format!("{base}escape/planted")).body("x"), 400, "path_not_allowed"),
        (agent.client.delete(format!("{base}escape/secret")), 400, "path_not_allowed"),
        (agent.client.put(format!("{base}keep.txt")).body(vec![b'x'; 2048]), 413, "too_large"),
        (agent.client.put(format!("{base}big.bin")).body(vec![b'x'; 1025]), 413, "too_large"),
        (
            agent.client.get(format!("{}/v1/sessions/nope/files/keep.txt", agent.base)),
            404,
            "session_not_found",
        ),
    ];
    for (request, status, code) in cases {
        let r = request.send().await.expect("request");
        let got = r.status().as_u16();
        let envelope: ErrorEnvelope = r.json().await.expect("envelope");
        assert_eq!((got, envelope.error.code.as_str()), (status, code), "{envelope:?}");
    }
    // A streamed body with no length is cut at the limit too.
    let chunks = futures::stream::iter((0..8).map(|_| Ok::<_, std::io::Error>(vec![b'y'; 512])));
    let r = agent
        .client
        .put(format!("{base}streamed.bin"))
        .body(reqwest::Body::wrap_stream(chunks))
        .send()
        .await
        .expect("streamed upload");
    assert_eq!(r.status(), 413);

    // Nothing changed: the outside dir, the kept file, the listing.
    let outside_entries: Vec<_> =
        std::fs::read_dir(outside.path()).expect("read").flatten().map(|e| e.file_name()).collect();
    assert_eq!(outside_entries, vec![std::ffi::OsString::from("secret")]);
    assert_eq!(listing(&agent, &s.id).await, vec![("keep.txt".to_string(), 8)]);
    let kept = agent
        .client
        .get(format!("{base}keep.txt"))
        .send()
        .await
        .expect("get")
        .text()
        .await
        .expect("text");
    assert_eq!(kept, "original");
    let scratch: Vec<_> = std::fs::read_dir(agent.workspace.path().join(".scratch").join(&s.id))
        .expect("scratch")
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| n.starts_with(".upload-"))
        .collect();
    assert!(scratch.is_empty(), "leftover uploads: {scratch:?}");
    agent.stop().await;
}
