//! Rendered manifests as JSON values.

use serde_json::Value;

/// Every non-empty document of a multi-document YAML stream.
pub fn parse(yaml: &str) -> Vec<Value> {
    let mut docs = Vec::new();
    for document in serde_yaml_ng::Deserializer::from_str(yaml) {
        let value: Value = serde::Deserialize::deserialize(document)
            .unwrap_or_else(|error| panic!("rendered YAML does not parse: {error}\n{yaml}"));
        if !value.is_null() {
            docs.push(value);
        }
    }
    docs
}

pub fn kind(doc: &Value) -> &str {
    doc["kind"].as_str().unwrap_or("")
}

pub fn name(doc: &Value) -> &str {
    doc["metadata"]["name"].as_str().unwrap_or("")
}

pub fn namespace(doc: &Value) -> &str {
    doc["metadata"]["namespace"].as_str().unwrap_or("")
}

/// `Kind/name` for messages.
pub fn id(doc: &Value) -> String {
    format!("{}/{}", kind(doc), name(doc))
}

/// All documents of `kind`.
pub fn of_kind<'a>(docs: &'a [Value], kind_: &str) -> Vec<&'a Value> {
    docs.iter().filter(|doc| kind(doc) == kind_).collect()
}

/// The one document of `kind` named `name`; panics listing what there is otherwise.
pub fn get<'a>(docs: &'a [Value], kind_: &str, name_: &str) -> &'a Value {
    docs.iter().find(|doc| kind(doc) == kind_ && name(doc) == name_).unwrap_or_else(|| {
        panic!("no {kind_}/{name_}; rendered: {:?}", docs.iter().map(id).collect::<Vec<_>>())
    })
}

/// The pod spec of a workload (Deployment, StatefulSet, DaemonSet, Job, Pod), if it has one.
pub fn pod_spec(doc: &Value) -> Option<&Value> {
    match kind(doc) {
        "Pod" => Some(&doc["spec"]),
        "Deployment" | "StatefulSet" | "DaemonSet" | "ReplicaSet" | "Job" => {
            Some(&doc["spec"]["template"]["spec"])
        }
        "CronJob" => Some(&doc["spec"]["jobTemplate"]["spec"]["template"]["spec"]),
        _ => None,
    }
}

/// A container's environment as (name, literal value or `None` for valueFrom).
pub fn env(container: &Value) -> Vec<(String, Option<String>)> {
    container["env"]
        .as_array()
        .map(|vars| {
            vars.iter()
                .map(|var| {
                    (
                        var["name"].as_str().unwrap_or("").to_owned(),
                        var["value"].as_str().map(str::to_owned),
                    )
                })
                .collect()
        })
        .unwrap_or_default()
}
