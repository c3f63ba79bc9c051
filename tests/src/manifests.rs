//! A minimal reader of the sandbox's Kubernetes YAML: Pods (name,
//! namespace, labels, nodeName, first container's command + args) and
//! Namespaces; every other kind is skipped. The agent has its own full
//! parser; this one only needs what the orchestrator runs and where.

use std::collections::BTreeMap;
use std::io;
use std::path::{Path, PathBuf};

use serde::Deserialize;
use serde_yaml::Value;

/// Errors reading manifests.
#[derive(Debug, thiserror::Error)]
pub enum ManifestError {
    #[error("{op} {path}: {source}")]
    Io {
        op: &'static str,
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("{path}, document {index}: {source}")]
    Yaml {
        path: PathBuf,
        index: usize,
        #[source]
        source: serde_yaml::Error,
    },
    #[error("{path}, document {index}: {field} {problem}")]
    Field {
        path: PathBuf,
        index: usize,
        field: &'static str,
        problem: &'static str,
    },
    #[error("pod {namespace}/{name} asks for node {node:?}, which the sandbox does not have")]
    UnknownNode {
        namespace: String,
        name: String,
        node: String,
    },
    #[error("no nodes to place pods on")]
    NoNodes,
}

/// What the orchestrator needs from a directory of manifests.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Manifests {
    pub pods: Vec<PodManifest>,
    /// Namespaces declared with `kind: Namespace`.
    pub namespaces: Vec<String>,
}

/// One pod.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct PodManifest {
    pub name: String,
    pub namespace: String,
    pub labels: BTreeMap<String, String>,
    /// `spec.nodeName`; filled in by [`assign_nodes`] when absent.
    pub node_name: Option<String>,
    /// `containers[0].command` followed by `containers[0].args`; empty if
    /// the manifest gives neither (the image's entrypoint is unknown here).
    pub command: Vec<String>,
    /// The file it came from.
    pub source: PathBuf,
}

#[derive(Deserialize)]
struct Meta {
    name: Option<String>,
    namespace: Option<String>,
    #[serde(default)]
    labels: BTreeMap<String, String>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct PodSpecYaml {
    node_name: Option<String>,
    #[serde(default)]
    containers: Vec<ContainerYaml>,
}

#[derive(Deserialize)]
struct ContainerYaml {
    #[serde(default)]
    command: Vec<String>,
    #[serde(default)]
    args: Vec<String>,
}

/// Reads every `*.yaml` / `*.yml` file in `dir` (sorted by name, not
/// recursive), each possibly holding several documents.
pub fn read_dir(dir: &Path) -> Result<Manifests, ManifestError> {
    let entries = std::fs::read_dir(dir).map_err(|source| ManifestError::Io {
        op: "read directory",
        path: dir.to_owned(),
        source,
    })?;
    let mut files: Vec<PathBuf> = entries
        .filter_map(Result::ok)
        .map(|e| e.path())
        .filter(|p| p.is_file() && p.extension().is_some_and(|e| e == "yaml" || e == "yml"))
        .collect();
    files.sort();
    let mut out = Manifests::default();
    for file in files {
        let text = std::fs::read_to_string(&file).map_err(|source| ManifestError::Io {
            op: "read",
            path: file.clone(),
            source,
        })?;
        parse_into(&text, &file, &mut out)?;
    }
    Ok(out)
}

/// Parses a multi-document YAML string, adding pods and namespaces to `out`.
pub fn parse_into(text: &str, path: &Path, out: &mut Manifests) -> Result<(), ManifestError> {
    for (index, doc) in serde_yaml::Deserializer::from_str(text).enumerate() {
        let yaml_err = |source| ManifestError::Yaml {
            path: path.to_owned(),
            index,
            source,
        };
        let value = Value::deserialize(doc).map_err(yaml_err)?;
        if value.is_null() {
            continue;
        }
        let kind = value
            .get("kind")
            .and_then(Value::as_str)
            .unwrap_or_default();
        let field_err = |field, problem| ManifestError::Field {
            path: path.to_owned(),
            index,
            field,
            problem,
        };
        match kind {
            "Namespace" | "Pod" => {}
            _ => continue,
        }
        let meta_value = value
            .get("metadata")
            .cloned()
            .ok_or_else(|| field_err("metadata", "is missing"))?;
        let meta: Meta = serde_yaml::from_value(meta_value).map_err(yaml_err)?;
        let name = meta
            .name
            .ok_or_else(|| field_err("metadata.name", "is missing"))?;
        if kind == "Namespace" {
            if !out.namespaces.contains(&name) {
                out.namespaces.push(name);
            }
            continue;
        }
        let spec_value = value
            .get("spec")
            .cloned()
            .ok_or_else(|| field_err("spec", "is missing"))?;
        let spec: PodSpecYaml = serde_yaml::from_value(spec_value).map_err(yaml_err)?;
        let container = spec
            .containers
            .into_iter()
            .next()
            .ok_or_else(|| field_err("spec.containers", "is empty"))?;
        let mut command = container.command;
        command.extend(container.args);
        out.pods.push(PodManifest {
            name,
            namespace: meta.namespace.unwrap_or_else(|| "default".to_owned()),
            labels: meta.labels,
            node_name: spec.node_name,
            command,
            source: path.to_owned(),
        });
    }
    Ok(())
}

/// Places pods without `nodeName` on `nodes` round-robin, in manifest
/// order (deterministic), and checks that given node names exist.
pub fn assign_nodes(pods: &mut [PodManifest], nodes: &[String]) -> Result<(), ManifestError> {
    if nodes.is_empty() {
        return Err(ManifestError::NoNodes);
    }
    let mut next = 0;
    for pod in pods {
        match &pod.node_name {
            Some(node) if nodes.contains(node) => {}
            Some(node) => {
                return Err(ManifestError::UnknownNode {
                    namespace: pod.namespace.clone(),
                    name: pod.name.clone(),
                    node: node.clone(),
                });
            }
            None => {
                pod.node_name = Some(nodes[next % nodes.len()].clone());
                next += 1;
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    const SAMPLE: &str = r#"
apiVersion: v1
kind: Namespace
metadata:
  name: shop
---
apiVersion: v1
kind: Pod
metadata:
  name: web
  namespace: shop
  labels: {app: web}
spec:
  nodeName: node-2
  containers:
    - name: web
      image: python
      command: ["python3", "-m", "http.server"]
      args: ["8080"]
---
apiVersion: v1
kind: Service
metadata: {name: web, namespace: shop}
spec: {ports: [{port: 80}]}
---
kind: Pod
metadata: {name: client}
spec:
  containers: [{name: c, image: x, command: ["sleep", "infinity"]}]
"#;

    #[test]
    fn reads_pods_and_namespaces() -> anyhow::Result<()> {
        let mut m = Manifests::default();
        parse_into(SAMPLE, Path::new("a.yaml"), &mut m)?;
        assert_eq!(m.namespaces, vec!["shop"]);
        assert_eq!(m.pods.len(), 2);
        let web = &m.pods[0];
        assert_eq!((web.name.as_str(), web.namespace.as_str()), ("web", "shop"));
        assert_eq!(web.labels.get("app").map(String::as_str), Some("web"));
        assert_eq!(web.node_name.as_deref(), Some("node-2"));
        assert_eq!(web.command, ["python3", "-m", "http.server", "8080"]);
        assert_eq!(m.pods[1].namespace, "default");
        Ok(())
    }

    #[test]
    fn errors_name_file_and_document() {
        let mut m = Manifests::default();
        let err = parse_into(
            "kind: Pod\nmetadata: {name: x}\nspec: {containers: []}\n",
            Path::new("b.yaml"),
            &mut m,
        )
        .expect_err("empty containers");
        let msg = err.to_string();
        assert!(
            msg.contains("b.yaml") && msg.contains("document 0") && msg.contains("spec.containers"),
            "{msg}"
        );
    }

    #[test]
    fn round_robin_is_deterministic() -> anyhow::Result<()> {
        let nodes = vec!["node-1".to_owned(), "node-2".to_owned()];
        let mut pods: Vec<PodManifest> = ["a", "b", "c"]
            .iter()
            .map(|n| PodManifest {
                name: (*n).to_owned(),
                ..PodManifest::default()
            })
            .collect();
        pods[1].node_name = Some("node-2".to_owned());
        assign_nodes(&mut pods, &nodes)?;
        let placed: Vec<_> = pods.iter().filter_map(|p| p.node_name.as_deref()).collect();
        assert_eq!(placed, ["node-1", "node-2", "node-2"]);
        pods[0].node_name = Some("node-9".to_owned());
        assert!(assign_nodes(&mut pods, &nodes).is_err());
        Ok(())
    }
}
