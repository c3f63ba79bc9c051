//! A private containerd (own root, state, sockets under a temp dir; never the
//! system's) whose `ctr run --cni` calls `porin-cni`.
//!
//! containerd 1.6's `ctr` reads its CNI config from the fixed `/etc/cni/net.d` and
//! plugins from `/opt/cni/bin`. So `ctr` runs in a private mount namespace where an
//! overlay of `/etc` holds our conflist and `/opt` is our plugin directory: the
//! host's `/etc` and `/opt` are never written.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use porin_testbed::names::unique_id;
use serde_json::Value;

/// containerd and the containers it runs for one test.
pub struct PrivateContainerd {
    pub dir: tempfile::TempDir,
    /// The containerd namespace (`ctr -n`); CNI_CONTAINERID is `<namespace>-<id>`.
    pub namespace: String,
    daemon: Child,
    /// Running containers and their `ctr run` processes.
    containers: Vec<(String, Child)>,
    exec_counter: std::cell::Cell<u32>,
}

impl PrivateContainerd {
    /// Start containerd with `conflist` as the only CNI network and `cni_bin` as
    /// the plugin `porin-cni`.
    pub fn start(cni_bin: &Path, conflist: &Value) -> Self {
        let dir = tempfile::Builder::new()
            .prefix("porin-containerd-")
            .tempdir()
            .expect("containerd dir");
        let d = dir.path();
        for sub in [
            "root",
            "state",
            "opt",
            "etc-up/cni/net.d",
            "etc-work",
            "cniopt/cni/bin",
        ] {
            std::fs::create_dir_all(d.join(sub)).expect("containerd dirs");
        }
        std::fs::write(
            d.join("etc-up/cni/net.d/10-porin.conflist"),
            serde_json::to_vec_pretty(conflist).expect("conflist"),
        )
        .expect("write conflist");
        std::os::unix::fs::symlink(cni_bin, d.join("cniopt/cni/bin/porin-cni"))
            .expect("plugin link");
        let config = format!(
            r#"version = 2
root = "{d}/root"
state = "{d}/state"
disabled_plugins = ["io.containerd.grpc.v1.cri"]
[grpc]
  address = "{d}/containerd.sock"
[ttrpc]
  address = "{d}/containerd.sock.ttrpc"
[plugins."io.containerd.internal.v1.opt"]
  path = "{d}/opt"
"#,
            d = d.display()
        );
        std::fs::write(d.join("config.toml"), config).expect("containerd config");
        let log = std::fs::File::create(d.join("containerd.log")).expect("containerd log");
        let daemon = Command::new("containerd")
            .arg("--config")
            .arg(d.join("config.toml"))
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("containerd (make deps installs it)");
        let ctrd = Self {
            namespace: format!("porin{}", unique_id()),
            dir,
            daemon,
            containers: Vec::new(),
            exec_counter: std::cell::Cell::new(0),
        };
        let deadline = Instant::now() + Duration::from_secs(15);
        while !ctrd.ctr(&["version"]).status.success() {
            assert!(
                Instant::now() < deadline,
                "containerd did not start:\n{}",
                ctrd.log()
            );
            std::thread::sleep(Duration::from_millis(100));
        }
        ctrd
    }

    /// A busybox-static root filesystem for one container, serving `index` from /www.
    pub fn rootfs(&self, name: &str, index: &str) -> PathBuf {
        let root = self.dir.path().join(format!("rootfs-{name}"));
        for sub in ["bin", "proc", "sys", "dev", "tmp", "etc", "www"] {
            std::fs::create_dir_all(root.join(sub)).expect("rootfs dirs");
        }
        std::fs::copy("/bin/busybox", root.join("bin/busybox"))
            .expect("/bin/busybox (busybox-static: make deps)");
        for applet in ["sh", "httpd", "nc", "sleep", "ip", "cat"] {
            std::os::unix::fs::symlink("busybox", root.join("bin").join(applet)).expect("applet");
        }
        std::fs::write(root.join("www/index.html"), format!("{index}\n")).expect("index");
        root
    }

    /// `ctr run --rm --cni --rootfs ROOTFS ID ARGS...` in the background, as a runtime
    /// would hold a sandbox: `ctr` calls CNI ADD before the task starts and CNI DEL
    /// when the task ends (`ctr` 1.6 does no DEL for detached containers). Returns
    /// once the task runs, or `ctr`'s output if it ended first.
    pub fn run(&mut self, id: &str, rootfs: &Path, args: &[&str]) -> Result<(), String> {
        let rootfs = rootfs.display().to_string();
        let mut all = vec![
            "run",
            "--rm",
            "--cni",
            "--null-io",
            "--rootfs",
            rootfs.as_str(),
            id,
        ];
        all.extend_from_slice(args);
        let log_path = self.dir.path().join(format!("ctr-run-{id}.log"));
        let log = std::fs::File::create(&log_path).expect("ctr log");
        let mut child = self
            .ctr_with_cni(&all)
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("spawn ctr run");
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            if let Ok(Some(status)) = child.try_wait() {
                let log = std::fs::read_to_string(&log_path).unwrap_or_default();
                return Err(format!("ctr run {id} ended ({status}): {log}"));
            }
            let tasks = self.ctr(&["task", "ls"]);
            let running = String::from_utf8_lossy(&tasks.stdout)
                .lines()
                .any(|l| l.split_whitespace().next() == Some(id) && l.contains("RUNNING"));
            if running {
                self.containers.push((id.to_string(), child));
                return Ok(());
            }
            if Instant::now() > deadline {
                let _ = child.kill();
                let _ = child.wait();
                return Err(format!("container {id} not running after 20 s"));
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// Run ARGS in a running container (`ctr task exec`).
    pub fn exec(&self, id: &str, args: &[&str]) -> Output {
        let n = self.exec_counter.get() + 1;
        self.exec_counter.set(n);
        let exec_id = format!("e{n}");
        let mut all = vec!["task", "exec", "--exec-id", exec_id.as_str(), id];
        all.extend_from_slice(args);
        self.ctr(&all)
    }

    /// Kill a container's task; its `ctr run --rm` then calls CNI DEL and removes
    /// the container. Returns whether `ctr run` finished within 15 s.
    pub fn remove(&mut self, id: &str) -> bool {
        let Some(index) = self.containers.iter().position(|(c, _)| c == id) else {
            return true;
        };
        let (_, mut child) = self.containers.remove(index);
        let _ = self.ctr(&["task", "kill", "-s", "SIGKILL", id]);
        let deadline = Instant::now() + Duration::from_secs(15);
        while Instant::now() < deadline {
            if matches!(child.try_wait(), Ok(Some(_))) {
                return true;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let _ = child.kill();
        let _ = child.wait();
        let _ = self.ctr(&["task", "rm", "-f", id]);
        let _ = self.ctr(&["container", "rm", id]);
        false
    }

    /// The CNI_CONTAINERID `ctr` gives container `id`.
    pub fn cni_container_id(&self, id: &str) -> String {
        format!("{}-{id}", self.namespace)
    }

    /// containerd's log, for failure messages.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("containerd.log")).unwrap_or_default()
    }

    /// `ctr` against this containerd.
    pub fn ctr(&self, args: &[&str]) -> Output {
        Command::new("ctr")
            .arg("--address")
            .arg(self.dir.path().join("containerd.sock"))
            .args(["-n", self.namespace.as_str()])
            .args(args)
            .output()
            .expect("run ctr")
    }

    /// `ctr` in a private mount namespace that shows our conflist in /etc/cni/net.d
    /// and our plugin in /opt/cni/bin.
    fn ctr_with_cni(&self, args: &[&str]) -> Command {
        let d = self.dir.path().display().to_string();
        let script = format!(
            "mount -t overlay porin-cni-etc -o lowerdir=/etc,upperdir={d}/etc-up,workdir={d}/etc-work /etc \
             && mount --bind {d}/cniopt /opt && exec \"$@\""
        );
        let mut cmd = Command::new("unshare");
        cmd.args([
            "--mount",
            "--propagation",
            "private",
            "--",
            "sh",
            "-c",
            &script,
            "ctr",
        ])
        .arg("ctr")
        .arg("--address")
        .arg(self.dir.path().join("containerd.sock"))
        .args(["-n", self.namespace.as_str()])
        .args(args);
        cmd
    }
}

impl Drop for PrivateContainerd {
    fn drop(&mut self) {
        let ids: Vec<String> = self.containers.iter().map(|(id, _)| id.clone()).collect();
        for id in ids {
            self.remove(&id);
        }
        let _ = self.ctr(&["namespace", "rm", self.namespace.as_str()]);
        // SAFETY: kill has no memory preconditions; the pid is our child's.
        unsafe {
            libc::kill(self.daemon.id() as libc::pid_t, libc::SIGTERM);
        }
        let deadline = Instant::now() + Duration::from_secs(5);
        while Instant::now() < deadline {
            if matches!(self.daemon.try_wait(), Ok(Some(_))) {
                break;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let _ = self.daemon.kill();
        let _ = self.daemon.wait();
        // runc's per-namespace parent cgroup (`/<namespace>/<id>` paths), under the v2
        // hierarchy wherever it is mounted (`/sys/fs/cgroup/unified` on hybrid hosts).
        for root in ["/sys/fs/cgroup", "/sys/fs/cgroup/unified"] {
            let _ = std::fs::remove_dir(Path::new(root).join(&self.namespace));
        }
    }
}
