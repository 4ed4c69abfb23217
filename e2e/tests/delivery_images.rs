//! The Containerfiles under images/: hadolint-clean, pinned bases, numeric non-root users, and
//! every package, binary and file they name exists in the workspace; every baked-in config file
//! passes its binary's own check (with what the pool manager adds for sandbox images).

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::process::Command;

use antwort_e2e::{tools, workspace};
use serde_json::Value;

/// images/<name>/Containerfile for every image directory.
fn containerfiles() -> Vec<(String, PathBuf)> {
    let mut files: Vec<(String, PathBuf)> = std::fs::read_dir(workspace::path("images"))
        .expect("images/")
        .map(|entry| entry.expect("a directory entry").path())
        .filter(|path| path.join("Containerfile").is_file())
        .map(|path| {
            (
                path.file_name().expect("a name").to_string_lossy().into_owned(),
                path.join("Containerfile"),
            )
        })
        .collect();
    files.sort();
    let names: Vec<&str> = files.iter().map(|(name, _)| name.as_str()).collect();
    assert_eq!(
        names,
        ["gateway", "pool-manager", "sandbox-file-search", "sandbox-python", "sandbox-web-search"]
    );
    files
}

/// Instructions of a Containerfile: (KEYWORD, arguments), continuations joined, comments dropped.
fn instructions(path: &PathBuf) -> Vec<(String, String)> {
    let text = std::fs::read_to_string(path).expect("read a Containerfile");
    let mut out = Vec::new();
    let mut current = String::new();
    for line in text.lines() {
        let trimmed = line.trim();
        if trimmed.starts_with('#') || (trimmed.is_empty() && current.is_empty()) {
            continue;
        }
        if let Some(head) = trimmed.strip_suffix('\\') {
            current.push_str(head);
            current.push(' ');
            continue;
        }
        current.push_str(trimmed);
        let (keyword, rest) = current.split_once(' ').unwrap_or((&current, ""));
        out.push((keyword.to_ascii_uppercase(), rest.trim().to_owned()));
        current.clear();
    }
    out
}

/// Packages and their binary targets, from `cargo metadata`.
fn workspace_bins() -> BTreeMap<String, Vec<String>> {
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".to_owned());
    let out = tools::stdout(Command::new(cargo).current_dir(workspace::root()).args([
        "metadata",
        "--no-deps",
        "--format-version",
        "1",
        "--offline",
    ]));
    let metadata: Value = serde_json::from_str(&out).expect("cargo metadata is JSON");
    metadata["packages"]
        .as_array()
        .expect("packages")
        .iter()
        .map(|package| {
            let bins = package["targets"]
                .as_array()
                .expect("targets")
                .iter()
                .filter(|target| {
                    target["kind"].as_array().is_some_and(|k| k.iter().any(|k| k == "bin"))
                })
                .map(|target| target["name"].as_str().expect("name").to_owned())
                .collect();
            (package["name"].as_str().expect("name").to_owned(), bins)
        })
        .collect()
}

/// The value after `flag` in a whitespace-separated command line.
fn flag_value<'a>(command: &'a str, flag: &str) -> Option<&'a str> {
    let mut words = command.split_whitespace();
    words.by_ref().find(|word| *word == flag)?;
    words.next()
}

/// A JSON-array instruction argument (`["a", "b"]`).
fn exec_form(args: &str) -> Vec<String> {
    serde_json::from_str(args).unwrap_or_else(|e| panic!("not exec form ({e}): {args}"))
}

#[test]
fn hadolint_finds_nothing() {
    for (name, file) in containerfiles() {
        let out = tools::output(Command::new(tools::hadolint()).arg("--no-color").arg(&file));
        assert!(
            out.status.success(),
            "hadolint images/{name}/Containerfile:\n{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }
}

#[test]
fn hadolint_really_lints() {
    // A Containerfile with the faults the images avoid must fail, or the test above proves nothing.
    let dir = tempfile::tempdir().expect("a temp dir");
    let bad = dir.path().join("Containerfile");
    std::fs::write(
        &bad,
        "FROM debian:latest\nRUN apt-get update && apt-get install -y python3\nUSER root\n",
    )
    .expect("write");
    let out = tools::output(Command::new(tools::hadolint()).arg("--no-color").arg(&bad));
    let report = String::from_utf8_lossy(&out.stdout);
    assert!(!out.status.success() && report.contains("DL3007"), "{report}");
}

#[test]
fn images_are_pinned_non_root_and_refer_to_what_exists() {
    let bins = workspace_bins();
    for (name, file) in containerfiles() {
        let what = format!("images/{name}/Containerfile");
        let steps = instructions(&file);
        let args: BTreeMap<String, String> = steps
            .iter()
            .filter(|(keyword, _)| keyword == "ARG")
            .filter_map(|(_, rest)| rest.split_once('=').map(|(k, v)| (k.to_owned(), v.to_owned())))
            .collect();
        // Base images: pinned by digest or an exact, versioned tag.
        let mut stages = Vec::new();
        let mut last_from = String::new();
        for (_, rest) in steps.iter().filter(|(keyword, _)| keyword == "FROM") {
            let mut words = rest.split_whitespace();
            let image = words.next().expect("FROM names an image");
            let image = match image.strip_prefix("${").and_then(|s| s.strip_suffix('}')) {
                Some(arg) => {
                    args.get(arg).unwrap_or_else(|| panic!("{what}: ARG {arg} has no default"))
                }
                None => image,
            };
            last_from = image.to_owned();
            if image != "scratch" && !stages.contains(&image.to_owned()) {
                let tag = image.rsplit_once(':').map(|(_, tag)| tag).unwrap_or("");
                assert!(
                    image.contains("@sha256:")
                        || (tag.chars().any(|c| c.is_ascii_digit()) && !tag.contains('/')),
                    "{what}: base image {image} is neither digest-pinned nor an exact version tag"
                );
            }
            if words.next().is_some_and(|w| w.eq_ignore_ascii_case("AS")) {
                stages.push(words.next().expect("a stage name").to_owned());
            }
        }
        assert!(
            !last_from.contains("rust:"),
            "{what}: the runtime stage must not be the toolchain"
        );
        // The runtime user: numeric, not root.
        let user =
            steps.iter().rev().find(|(keyword, _)| keyword == "USER").map(|(_, u)| u.as_str());
        let user = user.unwrap_or_else(|| panic!("{what}: no USER"));
        let uid = user.split(':').next().expect("uid");
        assert!(
            uid.parse::<u32>().is_ok_and(|uid| uid != 0),
            "{what}: USER {user} is not a numeric non-root uid"
        );
        // cargo build -p <package> --bin <binary>: both exist.
        let mut built = Vec::new();
        for (_, rest) in
            steps.iter().filter(|(keyword, rest)| keyword == "RUN" && rest.contains("cargo build"))
        {
            let package =
                flag_value(rest, "-p").unwrap_or_else(|| panic!("{what}: cargo build without -p"));
            let bin = flag_value(rest, "--bin")
                .unwrap_or_else(|| panic!("{what}: cargo build without --bin"));
            let package_bins = bins
                .get(package)
                .unwrap_or_else(|| panic!("{what}: no workspace package {package}"));
            assert!(
                package_bins.iter().any(|b| b == bin),
                "{what}: package {package} has no binary {bin}"
            );
            assert!(rest.contains("--locked"), "{what}: cargo build must be --locked");
            assert!(
                rest.contains(&format!("target/release/{bin} /out/{bin}")),
                "{what}: {bin} not installed to /out"
            );
            built.push(bin.to_owned());
        }
        assert_eq!(built.len(), 1, "{what}: builds exactly one binary");
        // COPY sources exist in the workspace (or come from the build stage's /out).
        let mut copied = Vec::new();
        for (_, rest) in steps.iter().filter(|(keyword, _)| keyword == "COPY") {
            let words: Vec<&str> = rest.split_whitespace().collect();
            let (dest, sources) = words.split_last().expect("COPY has a destination");
            let from = sources.iter().find_map(|w| w.strip_prefix("--from="));
            let sources: Vec<&str> =
                sources.iter().copied().filter(|w| !w.starts_with("--")).collect();
            for source in sources {
                match from {
                    None if source == "." => {}
                    None => assert!(
                        workspace::path(source).exists(),
                        "{what}: COPY {source}: no such file in the workspace"
                    ),
                    Some("build") => {
                        let bin = source.strip_prefix("/out/").expect("copies from /out");
                        assert!(
                            built.iter().any(|b| b == bin),
                            "{what}: {source} is not what the build stage built"
                        );
                    }
                    Some(_) => {}
                }
            }
            copied.push(dest.to_string());
        }
        // The entrypoint (and any config file it names) is what was copied in.
        let entrypoint = steps
            .iter()
            .rev()
            .find(|(keyword, _)| keyword == "ENTRYPOINT")
            .map(|(_, e)| exec_form(e));
        let entrypoint = entrypoint.unwrap_or_else(|| panic!("{what}: no ENTRYPOINT"));
        let cmd = steps
            .iter()
            .rev()
            .find(|(keyword, _)| keyword == "CMD")
            .map(|(_, c)| exec_form(c))
            .unwrap_or_default();
        let binary = &entrypoint[0];
        assert!(
            copied.contains(binary),
            "{what}: ENTRYPOINT {binary} is not copied into the image ({copied:?})"
        );
        assert!(
            binary.ends_with(&format!("/{}", built[0])),
            "{what}: runs {binary}, builds {}",
            built[0]
        );
        for arg in entrypoint.iter().chain(&cmd).filter(|arg| arg.starts_with("/etc/")) {
            assert!(
                copied.contains(arg),
                "{what}: {arg} is not copied into the image ({copied:?})"
            );
        }
    }
}

/// The config files baked into the images pass their binary's own check.
#[test]
fn baked_in_configs_pass_the_binaries_checks() {
    let agent = workspace::binary("antwort-sandbox-agent", "antwort-sandbox-agent");
    for (image, kind) in [
        ("sandbox-python", "python"),
        ("sandbox-file-search", "file-search"),
        ("sandbox-web-search", "web-search"),
    ] {
        let config = workspace::path(&format!("images/{image}/agent.yaml"));
        // What the pool manager sets on every sandbox pod of this kind (pool-manager/src/pod.rs,
        // and the contract in images/README.md).
        let mut command = Command::new(&agent);
        command.env_clear().arg("--config").arg(&config).arg("--check");
        for (name, value) in [
            ("ANTWORT_SERVER__LISTEN", "0.0.0.0:8443"),
            ("ANTWORT_SERVER__ADMIN_LISTEN", "0.0.0.0:9090"),
            (
                "ANTWORT_SERVER__ALLOWED_CALLERS",
                r#"["spiffe://cluster.local/ns/antwort/sa/antwort-gateway","spiffe://cluster.local/ns/antwort/sa/antwort-pool-manager"]"#,
            ),
            ("ANTWORT_CAPABILITIES__CODE", if kind == "python" { "true" } else { "false" }),
            (
                "ANTWORT_CAPABILITIES__FILE_SEARCH",
                if kind == "file-search" { "true" } else { "false" },
            ),
            (
                "ANTWORT_CAPABILITIES__WEB_SEARCH",
                if kind == "web-search" { "true" } else { "false" },
            ),
            ("ANTWORT_WORKSPACE__ROOT", "/mnt/data"),
            ("ANTWORT_IDENTITY__SOURCE", "files"),
            ("ANTWORT_IDENTITY__DIR", "/var/run/secrets/spiffe.io"),
        ] {
            command.env(name, value);
        }
        let out = tools::output(&mut command);
        assert!(
            out.status.success(),
            "antwort-sandbox-agent --check refuses images/{image}/agent.yaml with the pool manager's env:\n{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        let text = std::fs::read_to_string(&config).expect("read agent.yaml");
        let yaml: Value = serde_yaml_ng::from_str(&text).expect("agent.yaml is YAML");
        assert_eq!(
            yaml["workspace"]["root"], "/mnt/data",
            "{image}: the workspace is the emptyDir"
        );
        let capabilities = &yaml["capabilities"];
        let enabled: Vec<&str> = ["code", "file_search", "web_search"]
            .into_iter()
            .filter(|capability| capabilities[*capability] == true)
            .collect();
        let expected = match kind {
            "python" => "code",
            other => &other.replace('-', "_"),
        };
        assert_eq!(enabled, [expected], "{image}: only its own capability");
        let sandbox = &yaml["sandbox"];
        if kind == "python" {
            // The two-container layout (pool-manager/src/pod.rs): the agent as 65532 starts
            // interpreters through the spawner, which runs as 65533 in the group 65532.
            assert_eq!(sandbox["spawner"], "/run/antwort/spawner.sock", "{image}");
            assert_eq!((&sandbox["uid"], &sandbox["gid"]), (&65533.into(), &65532.into()));
            assert_eq!(sandbox["agent_uid"], 65532, "{image}");
            // The `sandbox` container: the image's entrypoint plus `spawner`, with its env.
            let out = tools::output(
                Command::new(&agent)
                    .env_clear()
                    .arg("--config")
                    .arg(&config)
                    .arg("spawner")
                    .arg("--check")
                    .env("ANTWORT_SANDBOX__SPAWNER", "/run/antwort/spawner.sock")
                    .env("ANTWORT_SANDBOX__UID", "65533")
                    .env("ANTWORT_SANDBOX__GID", "65532")
                    .env("ANTWORT_SANDBOX__AGENT_UID", "65532")
                    .env("ANTWORT_WORKSPACE__ROOT", "/mnt/data"),
            );
            assert!(
                out.status.success(),
                "antwort-sandbox-agent spawner --check refuses images/{image}/agent.yaml:\n{}",
                String::from_utf8_lossy(&out.stderr)
            );
        } else {
            assert!(sandbox["spawner"].is_null(), "{image}: runs no user code, needs no spawner");
        }
    }
    let gateway = workspace::binary("antwort-gateway", "antwort-gateway");
    let out = tools::output(
        Command::new(gateway)
            .env_clear()
            .env("ANTWORT_BACKEND_URL", "http://vllm:8000/v1")
            .env("ANTWORT_AUTH__API_KEYS", r#"["sk-image-test-0123456789"]"#)
            .arg("--config")
            .arg(workspace::path("images/gateway/gateway.yaml"))
            .arg("--check-config"),
    );
    assert!(
        out.status.success(),
        "antwort-gateway --check-config refuses images/gateway/gateway.yaml:\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn images_readme_covers_every_image() {
    let readme =
        std::fs::read_to_string(workspace::path("images/README.md")).expect("images/README.md");
    for (name, _) in containerfiles() {
        assert!(readme.contains(&format!("`{name}`")), "images/README.md does not describe {name}");
    }
    for contract in [
        "/mnt/data",
        "65532",
        "65533",
        "/run/antwort/spawner.sock",
        "antwort-sandbox-agent spawner",
        "8443",
        "9090",
        "ANTWORT_",
        "/etc/antwort/agent.yaml",
    ] {
        assert!(readme.contains(contract), "images/README.md does not state {contract}");
    }
}
