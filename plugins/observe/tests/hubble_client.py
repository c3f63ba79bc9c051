"""An independent Hubble client: grpcio with stubs that grpcio-tools generates
from proto/. Usage: hubble_client.py PROTO_DIR TARGET, where TARGET is a unix
socket path or host:port (an agent or the relay). Prints one JSON object with
what it saw; the Rust tests assert on it."""
import json
import os
import sys
import tempfile

import grpc_tools
from grpc_tools import protoc

stubs = tempfile.mkdtemp(prefix="hubble-stubs-")
rc = protoc.main([
    "grpc_tools.protoc", "-I", sys.argv[1],
    # The well-known types (timestamp, wrappers) ship with grpcio-tools.
    "-I", os.path.join(os.path.dirname(grpc_tools.__file__), "_proto"),
    "--python_out=" + stubs, "--grpc_python_out=" + stubs,
    "flow/flow.proto", "relay/relay.proto", "observer/observer.proto", "peer/peer.proto",
])
if rc != 0:
    sys.exit("grpcio-tools could not generate stubs from " + sys.argv[1])
sys.path.insert(0, stubs)

import grpc  # noqa: E402
from flow import flow_pb2  # noqa: E402
from observer import observer_pb2, observer_pb2_grpc  # noqa: E402

target = sys.argv[2]
if target.startswith("/"):
    # grpc-core would send the socket path as :authority, which is not a valid
    # HTTP/2 authority; Go clients (hubble) send "localhost" for unix sockets.
    channel = grpc.insecure_channel(
        "unix:" + target, options=[("grpc.default_authority", "localhost")]
    )
else:
    channel = grpc.insecure_channel(target)
stub = observer_pb2_grpc.ObserverStub(channel)

status = stub.ServerStatus(observer_pb2.ServerStatusRequest(), timeout=10)
request = observer_pb2.GetFlowsRequest(
    number=10,
    whitelist=[flow_pb2.FlowFilter(verdict=[flow_pb2.DROPPED], source_pod=["shop/"])],
)
flows = []
for response in stub.GetFlows(request, timeout=10):
    if not response.HasField("flow"):
        continue
    f = response.flow
    flows.append({
        "node_name": response.node_name,
        "source_pod": f.source.pod_name,
        "destination_pod": f.destination.pod_name,
        "verdict": flow_pb2.Verdict.Name(f.verdict),
        "drop_reason_desc": flow_pb2.DropReason.Name(f.drop_reason_desc),
        "traffic_direction": flow_pb2.TrafficDirection.Name(f.traffic_direction),
        "event_type": f.event_type.type,
        "dport": f.l4.TCP.destination_port,
        "syn": f.l4.TCP.flags.SYN,
        "is_reply_set": f.HasField("is_reply"),
        "seconds": f.time.seconds,
    })
# Every stored flow: which nodes they come from, and their times in stream order.
times = []
flow_nodes = set()
for response in stub.GetFlows(observer_pb2.GetFlowsRequest(number=1000), timeout=10):
    if response.HasField("flow"):
        flow_nodes.add(response.node_name)
        times.append(response.time.seconds * 10**9 + response.time.nanos)
nodes = stub.GetNodes(observer_pb2.GetNodesRequest(), timeout=10)
namespaces = stub.GetNamespaces(observer_pb2.GetNamespacesRequest(), timeout=10)
print(json.dumps({
    "num_flows": status.num_flows,
    "max_flows": status.max_flows,
    "seen_flows": status.seen_flows,
    "uptime_ns": status.uptime_ns,
    "num_connected_nodes": status.num_connected_nodes.value,
    "has_unavailable": status.HasField("num_unavailable_nodes"),
    "num_unavailable_nodes": status.num_unavailable_nodes.value,
    "unavailable_nodes": list(status.unavailable_nodes),
    "flows": flows,
    "flow_nodes": sorted(flow_nodes),
    "flow_times_sorted": times == sorted(times),
    "flow_count": len(times),
    "nodes": [n.name for n in nodes.nodes],
    "node_states": [n.state for n in nodes.nodes],
    "namespaces": [n.namespace for n in namespaces.namespaces],
}))
