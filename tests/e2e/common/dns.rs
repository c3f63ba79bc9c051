//! DNS helpers for the FQDN tests: `dig` from a pod, and a web server on addresses of
//! the external namespace (outside the cluster, `world`) that dnsmasq answers with.

use super::TestSandbox;

/// The seed article's names.
pub const SECRETS: &str = "secretsmanager.us-east-1.amazonaws.com";
pub const BUCKET: &str = "bucket.s3.us-east-1.amazonaws.com";
/// A CNAME of [`BUCKET`].
pub const ALIAS: &str = "data.s3.us-east-1.amazonaws.com";
pub const EVIL: &str = "evil.example.com";

/// Namespaces `payments` and `kube-system`, dnsmasq as `kube-system/kube-dns` on
/// `dns_node` answering [`SECRETS`], [`BUCKET`] and [`EVIL`] with `ips` (in that order) and
/// [`ALIAS`] as a CNAME of [`BUCKET`], and the client `payments/payments-api` on node-1.
pub fn pods_yaml(dns_node: &str, ips: [&str; 3]) -> String {
    let [secrets_ip, bucket_ip, evil_ip] = ips;
    format!(
        r#"apiVersion: v1
kind: Namespace
metadata: {{name: payments}}
---
apiVersion: v1
kind: Namespace
metadata: {{name: kube-system}}
---
apiVersion: v1
kind: Pod
metadata:
  name: kube-dns
  namespace: kube-system
  labels: {{k8s-app: kube-dns}}
spec:
  nodeName: {dns_node}
  containers:
    - name: dnsmasq
      image: ignored
      command: ["dnsmasq", "-k", "--user=root", "--pid-file", "--no-resolv", "--no-hosts",
                "--host-record={SECRETS},{secrets_ip}", "--host-record={BUCKET},{bucket_ip}",
                "--host-record={EVIL},{evil_ip}", "--cname={ALIAS},{BUCKET}"]
---
apiVersion: v1
kind: Pod
metadata:
  name: payments-api
  namespace: payments
  labels: {{app: payments-api}}
spec:
  nodeName: node-1
  containers:
    - name: c
      image: ignored
      command: ["sleep", "infinity"]
"#
    )
}

/// Kills the background web server of the external namespace when the test ends.
pub struct ExternalServer<'a> {
    sandbox: &'a TestSandbox,
    pid: String,
}

impl Drop for ExternalServer<'_> {
    fn drop(&mut self) {
        let _ = self.sandbox.exec_external(&["kill", &self.pid]);
    }
}

/// `ips` on the external namespace (outside the cluster), a route back to the pods of
/// node-1, and a web server on 443.
pub fn external_web<'a>(sandbox: &'a TestSandbox, ips: &[&str]) -> ExternalServer<'a> {
    for ip in ips {
        let out = sandbox.exec_external(&["ip", "addr", "add", &format!("{ip}/24"), "dev", "ul0"]);
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let out = sandbox.exec_external(&[
        "ip",
        "route",
        "replace",
        "10.200.1.0/24",
        "via",
        "192.168.200.1",
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let out = sandbox.exec_external(&[
        "sh",
        "-c",
        "python3 -m http.server 443 --bind 0.0.0.0 >/dev/null 2>&1 </dev/null & echo $!",
    ]);
    let pid = String::from_utf8_lossy(&out.stdout).trim().to_string();
    assert!(!pid.is_empty(), "web server did not start");
    ExternalServer { sandbox, pid }
}

/// `dig` from `pod`; returns (status line, answer addresses).
pub fn dig(
    sandbox: &TestSandbox,
    pod: &str,
    server: &str,
    name: &str,
    tcp: bool,
) -> (String, Vec<String>) {
    let at = format!("@{server}");
    let mut args = vec!["dig", at.as_str(), name, "+time=2", "+tries=2"];
    if tcp {
        args.push("+tcp");
    }
    let out = sandbox.exec(pod, &args);
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    let status = text
        .lines()
        .find_map(|l| l.split("status: ").nth(1))
        .map(|s| s.split(',').next().unwrap_or("").to_string())
        .unwrap_or_else(|| format!("no answer: {text}"));
    let addresses = text
        .lines()
        .filter(|l| !l.starts_with(';'))
        .filter_map(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            (f.len() == 5 && f[3] == "A").then(|| f[4].to_string())
        })
        .collect();
    (status, addresses)
}

/// `curl` from `pod` to `http://ip:443/`.
pub fn curl_ok(sandbox: &TestSandbox, pod: &str, ip: &str) -> bool {
    let url = format!("http://{ip}:443/");
    sandbox
        .exec(pod, &["curl", "-sS", "-o", "/dev/null", "-m", "2", &url])
        .status
        .success()
}
