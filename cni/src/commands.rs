//! ADD, DEL, CHECK, STATUS and GC against the agent's API.

use std::collections::BTreeSet;
use std::path::Path;
use std::process::Command as Process;

use porin_core::api::{AddEndpointRequest, AgentClient, EndpointInfo};
use porin_core::endpoint::links::POD_GATEWAY;

use crate::agent::to_cni_error;
use crate::config::NetConf;
use crate::env::CniEnv;
use crate::error::{CniError, ErrorCode};
use crate::pod::PodRef;
use crate::result::CniResult;

/// ADD: the agent makes the pod's veth, address and endpoint (or returns the
/// existing ones: a repeated ADD answers the same result).
pub async fn add(env: &CniEnv, conf: &NetConf) -> Result<CniResult, CniError> {
    let container_id = env.require_container_id()?;
    let netns = env.require_netns()?;
    let ifname = env.require_ifname()?;
    let pod = PodRef::resolve(env, conf)?;
    if !Path::new(netns).exists() {
        return Err(CniError::new(
            ErrorCode::InvalidEnvironment,
            format!("CNI_NETNS {netns} does not exist"),
            "the runtime must create the container's network namespace before ADD",
        ));
    }
    let client = AgentClient::new(conf.agent_socket());
    let request = AddEndpointRequest {
        namespace: pod.namespace.clone(),
        pod: pod.name.clone(),
        netns: netns.to_string(),
        ifname: ifname.to_string(),
        container_id: Some(container_id.to_string()),
    };
    let what = format!("add pod {}/{}", pod.namespace, pod.name);
    let endpoint = client
        .add_endpoint(&request)
        .await
        .map_err(|e| to_cni_error(&client, &what, e))?;
    Ok(CniResult::for_endpoint(
        &conf.cni_version,
        &endpoint,
        ifname,
        netns,
        conf.dns.as_ref(),
    ))
}

/// DEL: the agent removes the endpoint if it belongs to this container; an
/// unknown container is not an error.
pub async fn del(env: &CniEnv, conf: &NetConf) -> Result<(), CniError> {
    let container_id = env.require_container_id()?;
    env.require_ifname()?;
    let pod = PodRef::resolve(env, conf)?;
    let client = AgentClient::new(conf.agent_socket());
    let what = format!("delete pod {}/{}", pod.namespace, pod.name);
    client
        .delete_container_endpoint(&pod.namespace, &pod.name, container_id)
        .await
        .map_err(|e| to_cni_error(&client, &what, e))
}

/// CHECK: the agent still has the endpoint ADD made, for this container and
/// namespace, with the address of `prevResult`, and the interface in the
/// container has that address and the default route.
pub async fn check(env: &CniEnv, conf: &NetConf) -> Result<(), CniError> {
    let container_id = env.require_container_id()?;
    let netns = env.require_netns()?;
    let ifname = env.require_ifname()?;
    let pod = PodRef::resolve(env, conf)?;
    let prev = prev_result(conf)?;
    let client = AgentClient::new(conf.agent_socket());
    let key = format!("{}/{}", pod.namespace, pod.name);
    let endpoint = find_endpoint(&client, &pod, &format!("check pod {key}")).await?;
    let Some(endpoint) = endpoint else {
        return Err(CniError::new(
            ErrorCode::UnknownContainer,
            format!("the Porin agent has no endpoint for pod {key}"),
            format!("container {container_id} was never added, or was deleted"),
        ));
    };
    let differs = |what: String| {
        Err(CniError::new(
            ErrorCode::StateDiffers,
            format!("pod {key}: {what}"),
            "DEL and ADD the container again to repair it",
        ))
    };
    if endpoint
        .container_id
        .as_deref()
        .is_some_and(|c| c != container_id)
    {
        return differs(format!(
            "the endpoint belongs to container {}, not {container_id}",
            endpoint.container_id.as_deref().unwrap_or_default()
        ));
    }
    if endpoint.netns != netns {
        return differs(format!(
            "the endpoint is in network namespace {}, not {netns}",
            endpoint.netns
        ));
    }
    if !prev.ipv4_of(ifname).contains(&endpoint.ipv4) {
        return differs(format!(
            "prevResult has no address {} on {ifname}",
            endpoint.ipv4
        ));
    }
    let addresses = in_netns(netns, &["-o", "-4", "addr", "show", "dev", ifname])?;
    if !addresses.contains(&format!("inet {}/32", endpoint.ipv4)) {
        return differs(format!(
            "{ifname} in {netns} does not have {}/32",
            endpoint.ipv4
        ));
    }
    let routes = in_netns(netns, &["-4", "route", "show", "default"])?;
    if !routes.contains(&format!("via {POD_GATEWAY}")) {
        return differs(format!("{netns} has no default route via {POD_GATEWAY}"));
    }
    Ok(())
}

/// STATUS (CNI 1.1): ready when the agent answers and reports ready.
pub async fn status(conf: &NetConf) -> Result<(), CniError> {
    let client = AgentClient::new(conf.agent_socket());
    let socket = client.socket().display().to_string();
    match client.status().await {
        Ok(status) if status.ready => Ok(()),
        Ok(_) => Err(CniError::new(
            ErrorCode::NotAvailable,
            format!("the Porin agent at {socket} is not ready yet"),
            "it is syncing its datastore or loading the datapath",
        )),
        Err(e) => Err(CniError::new(
            ErrorCode::NotAvailable,
            format!("cannot reach the Porin agent at {socket}"),
            e.to_string(),
        )),
    }
}

/// GC (CNI 1.1): delete the endpoints made by CNI whose container is not in
/// `cni.dev/valid-attachments`. Endpoints made otherwise (the sandbox) stay.
pub async fn gc(conf: &NetConf) -> Result<(), CniError> {
    let Some(valid) = &conf.valid_attachments else {
        return Err(CniError::new(
            ErrorCode::InvalidConfig,
            "network config (stdin) field `cni.dev/valid-attachments` is required for GC",
            "the runtime lists the attachments it still uses",
        ));
    };
    let valid: BTreeSet<&str> = valid.iter().map(|a| a.container_id.as_str()).collect();
    let client = AgentClient::new(conf.agent_socket());
    let endpoints = client
        .endpoints()
        .await
        .map_err(|e| to_cni_error(&client, "list endpoints for GC", e))?;
    for endpoint in endpoints {
        let Some(container) = endpoint.container_id.as_deref() else {
            continue;
        };
        if valid.contains(container) {
            continue;
        }
        let what = format!("delete stale pod {}/{}", endpoint.namespace, endpoint.pod);
        client
            .delete_container_endpoint(&endpoint.namespace, &endpoint.pod, container)
            .await
            .map_err(|e| to_cni_error(&client, &what, e))?;
    }
    Ok(())
}

fn prev_result(conf: &NetConf) -> Result<CniResult, CniError> {
    let Some(value) = &conf.prev_result else {
        return Err(CniError::new(
            ErrorCode::InvalidConfig,
            "network config (stdin) field `prevResult` is required for CHECK",
            "the runtime passes the result of ADD",
        ));
    };
    serde_path_to_error::deserialize(value.clone()).map_err(|e| {
        CniError::new(
            ErrorCode::InvalidConfig,
            format!(
                "network config (stdin) field `prevResult.{}`: {}",
                e.path(),
                e.inner()
            ),
            "prevResult must be a CNI result",
        )
    })
}

async fn find_endpoint(
    client: &AgentClient,
    pod: &PodRef,
    what: &str,
) -> Result<Option<EndpointInfo>, CniError> {
    let endpoints = client
        .endpoints()
        .await
        .map_err(|e| to_cni_error(client, what, e))?;
    Ok(endpoints
        .into_iter()
        .find(|e| e.namespace == pod.namespace && e.pod == pod.name))
}

/// `ip ARGS` inside the container's namespace.
fn in_netns(netns: &str, args: &[&str]) -> Result<String, CniError> {
    let out = Process::new("nsenter")
        .arg(format!("--net={netns}"))
        .arg("ip")
        .args(args)
        .output()
        .map_err(|e| {
            CniError::new(
                ErrorCode::IoFailure,
                format!("cannot run `nsenter --net={netns} ip`"),
                e.to_string(),
            )
        })?;
    if !out.status.success() {
        return Err(CniError::new(
            ErrorCode::StateDiffers,
            format!("`ip {}` in {netns} failed", args.join(" ")),
            String::from_utf8_lossy(&out.stderr).trim().to_string(),
        ));
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}
