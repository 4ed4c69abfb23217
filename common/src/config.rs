//! Loading a binary's configuration: one YAML file, then `ANTWORT_*` environment overrides, then
//! typed deserialization that names the field path of every error.
//!
//! Environment overrides use `__` for nesting: `ANTWORT_LIMITS__MAX_BODY_BYTES=1048576` sets
//! `limits.max_body_bytes`. Values are parsed as YAML scalars (`true`, `42`, `"text"`). All three
//! binaries share the `ANTWORT_` prefix, so a variable whose first segment names no top-level key of
//! *this* binary's config is ignored rather than rejected.

use std::path::Path;

use serde::Serialize;
use serde::de::DeserializeOwned;
use serde_yaml_ng::{Mapping, Value};

/// Why a configuration could not be loaded. The message always names the file, variable or field.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read config file {path}: {source}")]
    Read { path: String, source: std::io::Error },
    #[error("config file {path} is not valid YAML: {source}")]
    Yaml { path: String, source: serde_yaml_ng::Error },
    #[error("environment variable {var}: {message}")]
    Env { var: String, message: String },
    #[error("config field `{path}`: {message}")]
    Field { path: String, message: String },
    #[error("invalid configuration:\n  - {}", .0.join("\n  - "))]
    Invalid(Vec<String>),
}

/// Reads `file` (if any), applies `ANTWORT_*` overrides from `env`, and deserializes into `T`.
///
/// `T::default()` tells which top-level keys exist (see the module docs), so `T` must serialize
/// every top-level field, `None`s included.
pub fn load<T>(
    file: Option<&Path>,
    env: impl IntoIterator<Item = (String, String)>,
) -> Result<T, ConfigError>
where
    T: DeserializeOwned + Serialize + Default,
{
    let mut tree = match file {
        Some(path) => {
            let text = std::fs::read_to_string(path)
                .map_err(|source| ConfigError::Read { path: path.display().to_string(), source })?;
            let value: Value = serde_yaml_ng::from_str(&text)
                .map_err(|source| ConfigError::Yaml { path: path.display().to_string(), source })?;
            match value {
                Value::Null => Value::Mapping(Mapping::new()),
                other => other,
            }
        }
        None => Value::Mapping(Mapping::new()),
    };
    let known = serde_yaml_ng::to_value(T::default()).map_err(|e| ConfigError::Field {
        path: String::new(),
        message: format!("default config does not serialize: {e}"),
    })?;
    apply_env(&mut tree, &known, env)?;
    let deserializer = tree;
    serde_path_to_error::deserialize(deserializer).map_err(|err| {
        let path = err.path().to_string();
        ConfigError::Field { path, message: err.into_inner().to_string() }
    })
}

fn apply_env(
    tree: &mut Value,
    known: &Value,
    env: impl IntoIterator<Item = (String, String)>,
) -> Result<(), ConfigError> {
    let mut vars: Vec<(String, String)> =
        env.into_iter().filter(|(k, _)| k.starts_with("ANTWORT_")).collect();
    // Sorted so that a parent (`ANTWORT_LIMITS`) is applied before its children.
    vars.sort();
    for (var, raw) in vars {
        let segments: Vec<String> =
            var["ANTWORT_".len()..].split("__").map(|s| s.to_ascii_lowercase()).collect();
        if segments.iter().any(|s| s.is_empty()) {
            continue;
        }
        let is_known =
            known.as_mapping().is_some_and(|m| m.contains_key(Value::String(segments[0].clone())));
        if !is_known {
            continue;
        }
        let value: Value = if raw.is_empty() {
            Value::String(String::new())
        } else {
            serde_yaml_ng::from_str(&raw).unwrap_or(Value::String(raw.clone()))
        };
        let mut node = &mut *tree;
        for (i, segment) in segments.iter().enumerate() {
            if !node.is_mapping() {
                if node.is_null() {
                    *node = Value::Mapping(Mapping::new());
                } else {
                    return Err(ConfigError::Env {
                        var: var.clone(),
                        message: format!(
                            "`{}` is not a mapping, cannot set a field inside it",
                            segments[..i].join(".")
                        ),
                    });
                }
            }
            let map = node.as_mapping_mut().expect("ensured above");
            let key = Value::String(segment.clone());
            if i + 1 == segments.len() {
                map.insert(key, value.clone());
                break;
            }
            node = map.entry(key).or_insert(Value::Null);
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde::Deserialize;

    #[derive(Debug, Default, Serialize, Deserialize, PartialEq)]
    #[serde(deny_unknown_fields, default)]
    struct Limits {
        max_body_bytes: u64,
    }

    #[derive(Debug, Default, Serialize, Deserialize, PartialEq)]
    #[serde(deny_unknown_fields, default)]
    struct Sample {
        listen: Option<String>,
        limits: Limits,
        flag: bool,
    }

    fn env(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
        pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect()
    }

    #[test]
    fn file_then_env_overrides_with_nesting() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("c.yaml");
        std::fs::write(&path, "listen: 127.0.0.1:1\nlimits:\n  max_body_bytes: 10\n")
            .expect("write");
        let cfg: Sample = load(
            Some(&path),
            env(&[
                ("ANTWORT_LIMITS__MAX_BODY_BYTES", "20"),
                ("ANTWORT_FLAG", "true"),
                ("ANTWORT_SOMETHING_ELSE", "ignored"),
                ("HOME", "/root"),
            ]),
        )
        .expect("loads");
        assert_eq!(cfg.listen.as_deref(), Some("127.0.0.1:1"));
        assert_eq!(cfg.limits.max_body_bytes, 20);
        assert!(cfg.flag);
    }

    #[test]
    fn errors_name_the_field_path() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("c.yaml");
        std::fs::write(&path, "limits:\n  max_body_bytes: lots\n").expect("write");
        let err = load::<Sample>(Some(&path), env(&[])).expect_err("must fail");
        assert!(err.to_string().contains("limits.max_body_bytes"), "{err}");
        std::fs::write(&path, "limits:\n  max_body_byte: 1\n").expect("write");
        let err = load::<Sample>(Some(&path), env(&[])).expect_err("must fail");
        assert!(err.to_string().contains("max_body_byte"), "{err}");
    }

    #[test]
    fn missing_file_is_a_read_error() {
        let err = load::<Sample>(Some(Path::new("/nonexistent/x.yaml")), env(&[]))
            .expect_err("must fail");
        assert!(matches!(err, ConfigError::Read { .. }));
    }
}
