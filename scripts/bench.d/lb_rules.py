#!/usr/bin/env python3
"""Inputs of `scripts/bench lb` (scripts/bench.d/lb.sh): the N Services Porin reads,
and the rules kube-proxy would write for the same N services, in its iptables mode
(iptables-restore input) and its nftables mode (nft -f input).

Service i (0-based) has the ClusterIP 10.100.0.0 + i + 1, port 80 -> 7000, four
backends. The last one, bench/target, is the one the client connects to; its
backends come from an explicit EndpointSlice (its own file), so the update step can
remove one backend by rewriting that small file, as an EndpointSlice controller would.

The rule structure follows what kube-proxy (v1.31) writes, minus what no packet of
this benchmark reaches (NodePorts, external IPs, firewall/no-endpoint filter chains):

iptables (nat table): PREROUTING/OUTPUT -> KUBE-SERVICES, one rule per service
  `-d VIP/32 -p tcp --dport 80 -j KUBE-SVC-X` (linear), KUBE-SVC-X picks one of the
  KUBE-SEP-Y chains with `-m statistic --mode random --probability 1/n`, KUBE-SEP-Y
  marks hairpin traffic for masquerade and DNATs; KUBE-POSTROUTING masquerades marked
  packets. Chain names: prefix + first 16 chars of base32(sha256(...)), like kube-proxy.
  An update (one service's endpoints change) is what kube-proxy's partial sync writes:
  KUBE-SERVICES in full (kube-proxy always rewrites it), the changed service's chains,
  and deletions of its stale endpoint chains.

nftables (table ip kube-proxy): the `service-ips` verdict map
  `ip daddr . meta l4proto . th dport : goto service-...` (one lookup whatever N is),
  each service chain `numgen random mod n vmap { i : goto endpoint-... }`, each endpoint
  chain hairpin mark + `dnat to`. An update replaces the service chain's vmap and
  deletes the stale endpoint chain in one transaction, as kube-proxy does.
"""
import base64
import hashlib
import ipaddress
import sys

BASE = ipaddress.IPv4Address("10.100.0.0")
NAMESPACE = "bench"
PORT = 80
TARGET_PORT = 7000
MASQ_MARK = "0x4000"


def vip(i):
    return BASE + i + 1


def name(i, n):
    return "target" if i == n - 1 else "svc-%d" % i


def b32(text, length):
    return base64.b32encode(hashlib.sha256(text.encode()).digest()).decode()[:length]


def services_yaml(n):
    """The N-1 selector Services (all but the target)."""
    out = []
    for i in range(n - 1):
        out.append(
            "apiVersion: v1\nkind: Service\nmetadata:\n  name: %s\n  namespace: %s\n"
            "spec:\n  clusterIP: %s\n  selector:\n    app: bench-server\n"
            "  ports:\n    - port: %d\n      targetPort: %d\n"
            % (name(i, n), NAMESPACE, vip(i), PORT, TARGET_PORT)
        )
    return "---\n".join(out)


def target_yaml(n, endpoints):
    """The target Service (no selector) and its EndpointSlice."""
    eps = "".join(
        "  - addresses: [\"%s\"]\n    conditions:\n      ready: true\n" % ep for ep in endpoints
    )
    return (
        "apiVersion: v1\nkind: Service\nmetadata:\n  name: target\n  namespace: %s\n"
        "spec:\n  clusterIP: %s\n  ports:\n    - port: %d\n      targetPort: %d\n"
        "---\napiVersion: discovery.k8s.io/v1\nkind: EndpointSlice\nmetadata:\n"
        "  name: target-1\n  namespace: %s\n  labels:\n    kubernetes.io/service-name: target\n"
        "addressType: IPv4\nports:\n  - port: %d\n    protocol: TCP\nendpoints:\n%s"
        % (NAMESPACE, vip(n - 1), PORT, TARGET_PORT, NAMESPACE, TARGET_PORT, eps)
    )


# --- iptables ---------------------------------------------------------------------

def ipt_svc_chain(svc):
    return "KUBE-SVC-" + b32(svc + ":tcp", 16)


def ipt_sep_chain(svc, ep):
    return "KUBE-SEP-" + b32(svc + ":tcp:" + ep, 16)


def ipt_service_rule(i, n):
    svc = "%s/%s" % (NAMESPACE, name(i, n))
    return '-A KUBE-SERVICES -d %s/32 -p tcp -m comment --comment "%s cluster IP" -m tcp --dport %d -j %s' % (
        vip(i), svc, PORT, ipt_svc_chain(svc))


def ipt_service_chains(i, n, endpoints):
    """(declarations, rules) of one service's KUBE-SVC and KUBE-SEP chains."""
    svc = "%s/%s" % (NAMESPACE, name(i, n))
    svc_chain = ipt_svc_chain(svc)
    decl, rules = [":%s - [0:0]" % svc_chain], []
    rules.append('-A %s ! -s 10.200.0.0/16 -d %s/32 -p tcp -m comment --comment "%s cluster IP" '
                 '-m tcp --dport %d -j KUBE-MARK-MASQ' % (svc_chain, vip(i), svc, PORT))
    for j, ep in enumerate(endpoints):
        sep = ipt_sep_chain(svc, ep)
        decl.append(":%s - [0:0]" % sep)
        left = len(endpoints) - j
        stat = "-m statistic --mode random --probability %.11f " % (1.0 / left) if left > 1 else ""
        rules.append('-A %s -m comment --comment "%s -> %s:%d" %s-j %s'
                     % (svc_chain, svc, ep, TARGET_PORT, stat, sep))
        rules.append('-A %s -s %s/32 -m comment --comment "%s" -j KUBE-MARK-MASQ' % (sep, ep, svc))
        rules.append('-A %s -p tcp -m comment --comment "%s" -m tcp -j DNAT --to-destination %s:%d'
                     % (sep, svc, ep, TARGET_PORT))
    return decl, rules


def iptables_full(n, endpoints):
    decl = [":KUBE-SERVICES - [0:0]", ":KUBE-MARK-MASQ - [0:0]", ":KUBE-POSTROUTING - [0:0]"]
    rules = [
        '-A PREROUTING -m comment --comment "kubernetes service portals" -j KUBE-SERVICES',
        '-A OUTPUT -m comment --comment "kubernetes service portals" -j KUBE-SERVICES',
        '-A POSTROUTING -m comment --comment "kubernetes postrouting rules" -j KUBE-POSTROUTING',
        "-A KUBE-MARK-MASQ -j MARK --or-mark %s" % MASQ_MARK,
        "-A KUBE-POSTROUTING -m mark ! --mark %s/%s -j RETURN" % (MASQ_MARK, MASQ_MARK),
        "-A KUBE-POSTROUTING -j MARK --xor-mark %s" % MASQ_MARK,
        '-A KUBE-POSTROUTING -m comment --comment "kubernetes service traffic requiring SNAT" '
        "-j MASQUERADE --random-fully",
    ]
    for i in range(n):
        rules.append(ipt_service_rule(i, n))
        d, r = ipt_service_chains(i, n, endpoints)
        decl += d
        rules += r
    return "*nat\n%s\n%s\nCOMMIT\n" % ("\n".join(decl), "\n".join(rules))


def iptables_update(n, endpoints, removed):
    """kube-proxy's partial sync after the target lost `removed`: KUBE-SERVICES in
    full, the target's chains, the stale endpoint chain deleted."""
    decl, rules = [":KUBE-SERVICES - [0:0]"], []
    rules += [ipt_service_rule(i, n) for i in range(n)]
    d, r = ipt_service_chains(n - 1, n, endpoints)
    decl += d
    rules += r
    svc = "%s/target" % NAMESPACE
    stale = ["-X %s" % ipt_sep_chain(svc, ep) for ep in removed]
    # A chain must be emptied before -X: declaring it flushes it.
    decl += [":%s - [0:0]" % ipt_sep_chain(svc, ep) for ep in removed]
    return "*nat\n%s\n%s\n%s\nCOMMIT\n" % ("\n".join(decl), "\n".join(rules), "\n".join(stale))


# --- nftables ---------------------------------------------------------------------

def nft_svc_chain(i, n):
    base = "%s/%s/tcp/" % (NAMESPACE, name(i, n))
    return "service-%s-%s" % (b32(base, 8), base)


def nft_ep_chain(i, n, ep):
    base = "%s/%s/tcp/__%s/%d" % (NAMESPACE, name(i, n), ep, TARGET_PORT)
    return "endpoint-%s-%s" % (b32(base, 8), base)


def nft_service_chain_body(i, n, endpoints):
    chain = nft_svc_chain(i, n)
    vmap = ", ".join('%d : goto %s' % (j, nft_ep_chain(i, n, ep)) for j, ep in enumerate(endpoints))
    return [
        'add chain ip kube-proxy %s' % chain,
        'flush chain ip kube-proxy %s' % chain,
        'add rule ip kube-proxy %s ip daddr %s tcp dport %d ip saddr != 10.200.0.0/16 jump mark-for-masquerade'
        % (chain, vip(i), PORT),
        'add rule ip kube-proxy %s numgen random mod %d vmap { %s }' % (chain, len(endpoints), vmap),
    ]


def nft_endpoint_chain(i, n, ep):
    chain = nft_ep_chain(i, n, ep)
    return [
        'add chain ip kube-proxy %s' % chain,
        'add rule ip kube-proxy %s ip saddr %s jump mark-for-masquerade' % (chain, ep),
        'add rule ip kube-proxy %s meta l4proto tcp dnat to %s:%d' % (chain, ep, TARGET_PORT),
    ]


def nftables_full(n, endpoints):
    out = [
        "add table ip kube-proxy",
        "delete table ip kube-proxy",
        "add table ip kube-proxy",
        "add chain ip kube-proxy mark-for-masquerade",
        "add rule ip kube-proxy mark-for-masquerade mark set mark or %s" % MASQ_MARK,
        "add chain ip kube-proxy masquerading",
        "add rule ip kube-proxy masquerading mark and %s == 0 return" % MASQ_MARK,
        "add rule ip kube-proxy masquerading mark set mark xor %s" % MASQ_MARK,
        "add rule ip kube-proxy masquerading masquerade fully-random",
        "add chain ip kube-proxy services",
        "add map ip kube-proxy service-ips { type ipv4_addr . inet_proto . inet_service : verdict ; }",
        "add rule ip kube-proxy services ip daddr . meta l4proto . th dport vmap @service-ips",
        "add chain ip kube-proxy nat-prerouting { type nat hook prerouting priority dstnat ; }",
        "add rule ip kube-proxy nat-prerouting jump services",
        "add chain ip kube-proxy nat-output { type nat hook output priority -100 ; }",
        "add rule ip kube-proxy nat-output jump services",
        "add chain ip kube-proxy nat-postrouting { type nat hook postrouting priority srcnat ; }",
        "add rule ip kube-proxy nat-postrouting jump masquerading",
    ]
    elements = []
    for i in range(n):
        for ep in endpoints:
            out += nft_endpoint_chain(i, n, ep)
        out += nft_service_chain_body(i, n, endpoints)
        elements.append('%s . tcp . %d : goto %s' % (vip(i), PORT, nft_svc_chain(i, n)))
    for start in range(0, len(elements), 1000):
        out.append("add element ip kube-proxy service-ips { %s }" % ", ".join(elements[start:start + 1000]))
    return "\n".join(out) + "\n"


def nftables_update(n, endpoints, removed):
    out = nft_service_chain_body(n - 1, n, endpoints)
    out += ['delete chain ip kube-proxy %s' % nft_ep_chain(n - 1, n, ep) for ep in removed]
    return "\n".join(out) + "\n"


def main(argv):
    usage = ("usage: lb_rules.py vip N | services N | target N EP... | iptables N EP... | "
             "iptables-update N REMOVED EP... | nftables N EP... | nftables-update N REMOVED EP...")
    if len(argv) < 2:
        sys.exit(usage)
    what, n = argv[0], int(argv[1])
    rest = argv[2:]
    if what == "vip":
        print(vip(n - 1))
    elif what == "services":
        sys.stdout.write(services_yaml(n))
    elif what == "target":
        sys.stdout.write(target_yaml(n, rest))
    elif what == "iptables":
        sys.stdout.write(iptables_full(n, rest))
    elif what == "iptables-update":
        sys.stdout.write(iptables_update(n, rest[1:], [rest[0]]))
    elif what == "nftables":
        sys.stdout.write(nftables_full(n, rest))
    elif what == "nftables-update":
        sys.stdout.write(nftables_update(n, rest[1:], [rest[0]]))
    else:
        sys.exit(usage)


if __name__ == "__main__":
    main(sys.argv[1:])
