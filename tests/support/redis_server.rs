//! Real `redis-server` processes for the Redis backend tests: one standalone server or a
//! three-master cluster per test, each on its own free loopback ports and in its own temp dir,
//! killed and cleaned up on drop. A missing `redis-server` fails loudly; it is never skipped.
//!
//! Set `REDIS_SERVER_BIN` (and `REDIS_CLI_BIN` for clusters) to use binaries off the `PATH`.

use std::collections::BTreeSet;
use std::env;
use std::ffi::{OsStr, OsString};
use std::fs::{self, File};
use std::io::{self, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Mutex, OnceLock, PoisonError};
use std::thread;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

/// How long a server has to answer `PING` after it is spawned.
const READY_TIMEOUT: Duration = Duration::from_secs(10);
/// How long a new cluster has to report `cluster_state:ok` on every node.
const CLUSTER_TIMEOUT: Duration = Duration::from_secs(20);
/// Read, write and connect timeout of [`RedisServer::command`].
const IO_TIMEOUT: Duration = Duration::from_secs(5);
/// Attempts at spawning a server before giving up (a new port each time for a new server, the
/// same port again for a restart).
const SPAWN_ATTEMPTS: usize = 5;
/// The cluster bus listens on the client port plus this.
const BUS_PORT_OFFSET: u16 = 10_000;

/// A `redis-server` child on `127.0.0.1:<port>`, without persistence, logging to a file in its
/// own temp dir. Dropping it kills and reaps the process and removes the dir.
#[derive(Debug)]
pub(crate) struct RedisServer {
    port: u16,
    dir: PathBuf,
    /// The caller's arguments, after ours: they win over the defaults.
    extra_args: Vec<String>,
    /// Whether this is a cluster node (adds the cluster arguments).
    cluster: bool,
    /// `None` once stopped.
    child: Option<Child>,
}

impl RedisServer {
    /// A server with the default arguments.
    pub(crate) fn new() -> Self {
        Self::with_args(&[])
    }

    /// A server with `args` appended to the defaults, e.g. `&["--requirepass", "x"]` or
    /// `&["--maxmemory", "2mb"]`.
    pub(crate) fn with_args(args: &[&str]) -> Self {
        Self::start(args, false)
    }

    /// The loopback port the server listens on (the same across restarts).
    pub(crate) fn port(&self) -> u16 {
        self.port
    }

    /// `redis://127.0.0.1:<port>/`, without credentials.
    pub(crate) fn url(&self) -> String {
        format!("redis://127.0.0.1:{}/", self.port)
    }

    /// The server's process id, `None` while stopped.
    pub(crate) fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    /// Whether the process was started and not stopped since (it may still have died).
    pub(crate) fn is_running(&self) -> bool {
        self.child.is_some()
    }

    /// The server's log file so far (all runs of it: a restart appends).
    pub(crate) fn log(&self) -> String {
        fs::read_to_string(self.dir.join("redis.log")).unwrap_or_default()
    }

    /// Kills the server with SIGKILL and reaps it; a no-op when already stopped.
    pub(crate) fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Stops the server if it runs, then starts it again on the same port with the same
    /// arguments and waits until it answers. The data is gone (nothing is persisted); a cluster
    /// node keeps its identity and slots through its nodes file.
    pub(crate) fn restart(&mut self) {
        self.stop();
        let mut failures = Vec::new();
        for _ in 0..SPAWN_ATTEMPTS {
            wait_until_bindable(self.port);
            match self.spawn_and_wait() {
                Ok(()) => return,
                Err(failure) => failures.push(failure),
            }
            thread::sleep(Duration::from_millis(200));
        }
        panic!(
            "redis-server did not restart on port {}: {}\n{}",
            self.port,
            failures.join("; "),
            self.diagnostics()
        );
    }

    /// Sends one command as a RESP array over a fresh connection and returns the raw reply,
    /// e.g. `"+OK\r\n"`, `"$1\r\nv\r\n"`, `":-1\r\n"` or `"-ERR ...\r\n"`. Authenticates first
    /// when the server was started with `--requirepass`.
    ///
    /// # Panics
    ///
    /// When the server cannot be reached or the reply is malformed (with the server's log).
    pub(crate) fn command(&self, args: &[&str]) -> String {
        self.try_command(args).unwrap_or_else(|err| {
            panic!(
                "redis command {args:?} on port {} failed: {err}\n{}",
                self.port,
                self.diagnostics()
            )
        })
    }

    /// [`command`](Self::command) that returns the I/O error instead of panicking, for tests that
    /// expect the server to be down.
    pub(crate) fn try_command(&self, args: &[&str]) -> io::Result<String> {
        let addr = SocketAddr::from(([127, 0, 0, 1], self.port));
        let mut stream = TcpStream::connect_timeout(&addr, IO_TIMEOUT)?;
        stream.set_read_timeout(Some(IO_TIMEOUT))?;
        stream.set_write_timeout(Some(IO_TIMEOUT))?;

        let mut request = Vec::new();
        let password = self.password();
        if let Some(password) = password {
            encode_command(&mut request, &["AUTH", password]);
        }
        encode_command(&mut request, args);
        stream.write_all(&request)?;

        let mut buf = Vec::new();
        let mut start = 0;
        if password.is_some() {
            let auth_len = read_reply(&mut stream, &mut buf, 0)?;
            if !buf.starts_with(b"+OK") {
                // Hand the failed AUTH's answer to the caller; it is what they need to see.
                return Ok(String::from_utf8_lossy(&buf[..auth_len]).into_owned());
            }
            start = auth_len;
        }
        let len = read_reply(&mut stream, &mut buf, start)?;
        let _ = stream.shutdown(Shutdown::Both);
        Ok(String::from_utf8_lossy(&buf[start..start + len]).into_owned())
    }

    /// Picks a port, spawns, and waits for readiness; a server that exits before it answers
    /// (its port taken meanwhile) is tried again on a new port.
    fn start(args: &[&str], cluster: bool) -> Self {
        let extra_args: Vec<String> = args.iter().map(|arg| arg.to_string()).collect();
        let mut failures = Vec::new();
        for _ in 0..SPAWN_ATTEMPTS {
            let mut server = RedisServer {
                port: free_port(cluster),
                dir: unique_temp_dir(),
                extra_args: extra_args.clone(),
                cluster,
                child: None,
            };
            match server.spawn_and_wait() {
                Ok(()) => return server,
                Err(failure) if failures.len() + 1 < SPAWN_ATTEMPTS => failures.push(failure),
                Err(failure) => panic!(
                    "redis-server did not start after {SPAWN_ATTEMPTS} attempts: {}; {failure}\n{}",
                    failures.join("; "),
                    server.diagnostics()
                ),
            }
        }
        unreachable!("the last attempt returns or panics")
    }

    /// Spawns the process and waits until it answers `PING`. `Err` when it exits first; panics
    /// (with the log) when it neither answers nor exits within [`READY_TIMEOUT`].
    fn spawn_and_wait(&mut self) -> Result<(), String> {
        let output = File::options()
            .create(true)
            .append(true)
            .open(self.dir.join("stdio.log"))
            .expect("redis-server stdio log file");
        self.child = Some(launch(&server_bin(), &self.argv(), output));
        let deadline = Instant::now() + READY_TIMEOUT;
        loop {
            if let Some(status) = self.exited() {
                return Err(format!(
                    "redis-server on port {} exited: {status}",
                    self.port
                ));
            }
            if ping_answered(self.port) {
                return self.check_ownership();
            }
            if Instant::now() >= deadline {
                panic!(
                    "redis-server on port {} did not answer PING within {READY_TIMEOUT:?}\n{}",
                    self.port,
                    self.diagnostics()
                );
            }
            thread::sleep(Duration::from_millis(20));
        }
    }

    /// Whether the server answering on our port is our child: between releasing a free port and
    /// the child binding it, another process (a second test binary) may have taken it.
    fn check_ownership(&mut self) -> Result<(), String> {
        let pid = self.pid().expect("a spawned child");
        let info = self.try_command(&["INFO", "server"]).unwrap_or_default();
        let Some(answered) = info
            .lines()
            .find_map(|line| line.strip_prefix("process_id:"))
        else {
            // No INFO (e.g. renamed or ACL-restricted): PING from a live child is all we have.
            return Ok(());
        };
        if answered.trim() == pid.to_string() {
            return Ok(());
        }
        self.stop();
        Err(format!(
            "port {} is served by another process (pid {answered})",
            self.port
        ))
    }

    /// The exit status when the child has exited (it is then reaped and forgotten).
    fn exited(&mut self) -> Option<ExitStatus> {
        let status = self.child.as_mut()?.try_wait().ok().flatten()?;
        self.child = None;
        Some(status)
    }

    fn argv(&self) -> Vec<OsString> {
        let dir = self.dir.as_os_str();
        let mut argv: Vec<OsString> = vec![
            "--port".into(),
            self.port.to_string().into(),
            "--bind".into(),
            "127.0.0.1".into(),
            "--save".into(),
            "".into(),
            "--appendonly".into(),
            "no".into(),
            "--dir".into(),
            dir.into(),
            "--logfile".into(),
            self.dir.join("redis.log").into(),
        ];
        if server_major_version() >= 7 {
            // Redis 7 refuses DEBUG (e.g. `DEBUG SLEEP 0`) unless it is enabled.
            argv.extend(["--enable-debug-command".into(), "yes".into()]);
        }
        if self.cluster {
            let nodes_file = self.dir.join(format!("nodes-{}.conf", self.port));
            argv.extend([
                "--cluster-enabled".into(),
                "yes".into(),
                "--cluster-config-file".into(),
                nodes_file.into(),
                "--cluster-node-timeout".into(),
                "2000".into(),
            ]);
        }
        argv.extend(self.extra_args.iter().map(OsString::from));
        argv
    }

    /// Sends a real signal (`-KILL`, `-STOP`, `-CONT`) to the server process.
    #[cfg_attr(not(feature = "redis"), allow(dead_code))]
    pub(crate) fn signal(&self, sig: &str) {
        let pid = self.pid().expect("a running server").to_string();
        let status = Command::new("kill")
            .args([sig, &pid])
            .status()
            .expect("run kill");
        assert!(status.success(), "kill {sig} {pid}");
    }

    /// The value that follows `flag` in the extra arguments.
    fn arg(&self, flag: &str) -> Option<&str> {
        let at = self.extra_args.iter().position(|a| a == flag)?;
        self.extra_args.get(at + 1).map(String::as_str)
    }

    /// The TLS port, when the server has one.
    pub(crate) fn tls_port(&self) -> Option<u16> {
        self.arg("--tls-port")?.parse().ok()
    }

    fn password(&self) -> Option<&str> {
        let at = self.extra_args.iter().position(|a| a == "--requirepass")?;
        self.extra_args.get(at + 1).map(String::as_str)
    }

    /// Everything a failure message needs: the command line, the log, and stray output.
    fn diagnostics(&self) -> String {
        let stdio = fs::read_to_string(self.dir.join("stdio.log")).unwrap_or_default();
        format!(
            "--- redis-server {:?}\n--- redis.log ({})\n{}--- stdout/stderr\n{stdio}",
            self.argv(),
            self.dir.display(),
            self.log()
        )
    }
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        self.stop();
        let _ = fs::remove_dir_all(&self.dir);
    }
}

/// A real three-master Redis cluster on free loopback ports, without replicas or with one per
/// master. Dropping it stops every node and removes their dirs.
#[derive(Debug)]
pub(crate) struct RedisCluster {
    nodes: Vec<RedisServer>,
    /// Replicas per master.
    replicas: usize,
}

impl RedisCluster {
    /// A cluster whose nodes run with the default arguments.
    pub(crate) fn new() -> Self {
        Self::with_args(&[])
    }

    /// A cluster whose nodes all run with `args` appended (a `--requirepass` is passed on to
    /// `redis-cli` too).
    pub(crate) fn with_args(args: &[&str]) -> Self {
        Self::start(args, 0)
    }

    /// Three masters with one replica each (six nodes), all run with `args` appended: a master
    /// that fails is replaced by its replica, as in production.
    pub(crate) fn with_replicas(args: &[&str]) -> Self {
        let cluster = Self::start(args, 1);
        // Replicas that have not finished their first sync would refuse to be promoted.
        let deadline = Instant::now() + CLUSTER_TIMEOUT;
        while !(0..cluster.nodes.len())
            .filter(|&i| !cluster.is_master(i))
            .all(|i| cluster.nodes[i].command(&["ROLE"]).contains("connected"))
        {
            assert!(
                Instant::now() < deadline,
                "the replicas never synced\n{}",
                cluster.diagnostics()
            );
            thread::sleep(Duration::from_millis(50));
        }
        cluster
    }

    fn start(args: &[&str], replicas: usize) -> Self {
        let count = 3 * (1 + replicas);
        let nodes: Vec<RedisServer> = (0..count).map(|_| RedisServer::start(args, true)).collect();
        let cluster = RedisCluster { nodes, replicas };
        cluster.create();
        cluster.wait_for_state("ok", CLUSTER_TIMEOUT);
        cluster
    }

    /// Three masters that clients and each other reach over TLS (`tls-cluster yes`, so
    /// `CLUSTER SLOTS` names their TLS ports), with the certificate, key and CA in `dir`
    /// (`server.crt`, `server.key`, `ca.crt`) and no client certificates. Each node keeps a
    /// plain port too, which only these helpers use.
    #[cfg_attr(not(feature = "tls"), allow(dead_code))]
    pub(crate) fn with_tls(dir: &std::path::Path) -> Self {
        let nodes: Vec<RedisServer> = (0..3)
            .map(|_| {
                // Its cluster bus listens on the TLS port plus 10 000: reserve both.
                let mut args = tls_args(dir, free_port(true));
                args.extend(["--tls-cluster".into(), "yes".into()]);
                let args: Vec<&str> = args.iter().map(String::as_str).collect();
                RedisServer::start(&args, true)
            })
            .collect();
        let cluster = RedisCluster { nodes, replicas: 0 };
        cluster.create();
        cluster.wait_for_state("ok", CLUSTER_TIMEOUT);
        cluster
    }

    /// `rediss://127.0.0.1:<TLS port>/` of every node of a cluster made by
    /// [`with_tls`](Self::with_tls).
    #[cfg_attr(not(feature = "tls"), allow(dead_code))]
    pub(crate) fn tls_urls(&self) -> Vec<String> {
        self.nodes
            .iter()
            .map(|node| {
                format!(
                    "rediss://127.0.0.1:{}/",
                    node.tls_port().expect("a TLS port")
                )
            })
            .collect()
    }

    /// The index of the node that serves `key`: every other running node, replica or master,
    /// answers `-MOVED`.
    #[cfg_attr(not(feature = "redis"), allow(dead_code))]
    pub(crate) fn owner(&self, key: &str) -> usize {
        let owners: Vec<usize> = (0..self.nodes.len())
            .filter(|&i| self.nodes[i].is_running())
            .filter(|&i| {
                !self.nodes[i]
                    .command(&["EXISTS", key])
                    .starts_with("-MOVED")
            })
            .collect();
        assert_eq!(owners.len(), 1, "{key} is served by {owners:?}");
        owners[0]
    }

    /// Whether node `i` is a master now, by its own `ROLE`.
    pub(crate) fn is_master(&self, i: usize) -> bool {
        // `*3 master <offset> <replicas>`; a replica answers `*5 slave <host> <port> ...`.
        self.nodes[i]
            .try_command(&["ROLE"])
            .is_ok_and(|role| role.starts_with("*3\r\n$6\r\nmaster\r\n"))
    }

    /// The node that replicates node `master`, by the replicas' `ROLE`.
    ///
    /// # Panics
    ///
    /// When no running node replicates it.
    pub(crate) fn replica_of(&self, master: usize) -> usize {
        let port = format!("\r\n:{}\r\n", self.nodes[master].port);
        (0..self.nodes.len())
            .find(|&i| {
                i != master
                    && self.nodes[i].is_running()
                    && self.nodes[i]
                        .try_command(&["ROLE"])
                        .is_ok_and(|role| role.contains("slave") && role.contains(&port))
            })
            .unwrap_or_else(|| panic!("no replica of node {master}\n{}", self.diagnostics()))
    }

    /// `redis://127.0.0.1:<port>/` of every node.
    pub(crate) fn urls(&self) -> Vec<String> {
        self.nodes.iter().map(RedisServer::url).collect()
    }

    /// Every node: three, or six with replicas (which are masters may change; see
    /// [`is_master`](Self::is_master)).
    pub(crate) fn nodes(&self) -> &[RedisServer] {
        &self.nodes
    }

    /// Every node, to stop or restart one.
    pub(crate) fn nodes_mut(&mut self) -> &mut [RedisServer] {
        &mut self.nodes
    }

    /// Waits until every running node reports `cluster_state:<state>` (`"ok"` or `"fail"`).
    ///
    /// # Panics
    ///
    /// After `timeout`, with every node's `CLUSTER INFO` and log.
    pub(crate) fn wait_for_state(&self, state: &str, timeout: Duration) {
        let wanted = format!("cluster_state:{state}");
        let deadline = Instant::now() + timeout;
        loop {
            let all = self
                .nodes
                .iter()
                .filter(|node| node.is_running())
                .all(|node| {
                    node.try_command(&["CLUSTER", "INFO"])
                        .is_ok_and(|info| info.contains(&wanted))
                });
            if all {
                return;
            }
            if Instant::now() >= deadline {
                panic!(
                    "the cluster did not reach {wanted} within {timeout:?}\n{}",
                    self.diagnostics()
                );
            }
            thread::sleep(Duration::from_millis(50));
        }
    }

    /// `redis-cli --cluster create` over the nodes, killed if it hangs.
    fn create(&self) {
        let bin = env::var_os("REDIS_CLI_BIN").unwrap_or_else(|| "redis-cli".into());
        let output_path = self.nodes[0].dir.join("redis-cli.log");
        let output = File::create(&output_path).expect("redis-cli log file");
        let mut command = Command::new(&bin);
        command.arg("--cluster").arg("create");
        // With `tls-cluster yes` the nodes meet on their TLS ports, over TLS.
        let tls = self.nodes[0].arg("--tls-cluster") == Some("yes");
        command.args(self.nodes.iter().map(|node| {
            let port = match tls {
                true => node.tls_port().expect("a TLS port"),
                false => node.port,
            };
            format!("127.0.0.1:{port}")
        }));
        if tls {
            let ca = self.nodes[0].arg("--tls-ca-cert-file").expect("a CA file");
            command.args(["--tls", "--cacert", ca]);
        }
        command.args([
            "--cluster-replicas",
            &self.replicas.to_string(),
            "--cluster-yes",
        ]);
        if let Some(password) = self.nodes[0].password() {
            command.args(["-a", password, "--no-auth-warning"]);
        }
        let mut child = command
            .stdin(Stdio::null())
            .stdout(output.try_clone().expect("redis-cli log file"))
            .stderr(output)
            .spawn()
            .unwrap_or_else(|err| cannot_run(&bin, "REDIS_CLI_BIN", "redis-cli", err));

        let deadline = Instant::now() + CLUSTER_TIMEOUT;
        let status = loop {
            if let Some(status) = child.try_wait().expect("wait for redis-cli") {
                break Some(status);
            }
            if Instant::now() >= deadline {
                let _ = child.kill();
                let _ = child.wait();
                break None;
            }
            thread::sleep(Duration::from_millis(50));
        };
        if status.is_none_or(|status| !status.success()) {
            let output = fs::read_to_string(&output_path).unwrap_or_default();
            panic!(
                "`redis-cli --cluster create` failed ({}):\n{output}\n{}",
                status.map_or("timed out".to_string(), |s| s.to_string()),
                self.diagnostics()
            );
        }
    }

    fn diagnostics(&self) -> String {
        let mut text = String::new();
        for node in &self.nodes {
            let info = node
                .try_command(&["CLUSTER", "INFO"])
                .unwrap_or_else(|err| format!("(unreachable: {err})"));
            text += &format!(
                "=== node {} (running: {})\n--- CLUSTER INFO\n{info}\n{}\n",
                node.port,
                node.is_running(),
                node.diagnostics()
            );
        }
        text
    }
}

/// The arguments that serve TLS on `tls_port` with the certificate, key and CA in `dir`
/// (`server.crt`, `server.key`, `ca.crt`), and no client certificates (a client authenticates
/// with a password, if any).
#[cfg_attr(not(feature = "tls"), allow(dead_code))]
pub(crate) fn tls_args(dir: &std::path::Path, tls_port: u16) -> Vec<String> {
    let file = |name: &str| dir.join(name).to_string_lossy().into_owned();
    vec![
        "--tls-port".into(),
        tls_port.to_string(),
        "--tls-cert-file".into(),
        file("server.crt"),
        "--tls-key-file".into(),
        file("server.key"),
        "--tls-ca-cert-file".into(),
        file("ca.crt"),
        "--tls-auth-clients".into(),
        "no".into(),
    ]
}

/// `REDIS_SERVER_BIN`, or `redis-server` on the `PATH`.
fn server_bin() -> OsString {
    env::var_os("REDIS_SERVER_BIN").unwrap_or_else(|| "redis-server".into())
}

/// The major version of [`server_bin`], asked once per test binary.
fn server_major_version() -> u32 {
    static VERSION: OnceLock<u32> = OnceLock::new();
    *VERSION.get_or_init(|| major_version(&server_bin()))
}

/// Runs `<bin> --version` and reads the `v=7.0.15` field.
fn major_version(bin: &OsStr) -> u32 {
    let output = Command::new(bin)
        .arg("--version")
        .stdin(Stdio::null())
        .output()
        .unwrap_or_else(|err| cannot_run(bin, "REDIS_SERVER_BIN", "redis-server", err));
    let text = String::from_utf8_lossy(&output.stdout);
    text.split_once("v=")
        .and_then(|(_, rest)| rest.split('.').next())
        .and_then(|major| major.parse().ok())
        .unwrap_or_else(|| panic!("cannot read the version of {bin:?} from {text:?}"))
}

/// Spawns `redis-server` with `argv`, its stdout and stderr going to `output`.
fn launch(bin: &OsStr, argv: &[OsString], output: File) -> Child {
    Command::new(bin)
        .args(argv)
        .stdin(Stdio::null())
        .stdout(output.try_clone().expect("redis-server stdio log file"))
        .stderr(output)
        .spawn()
        .unwrap_or_else(|err| cannot_run(bin, "REDIS_SERVER_BIN", "redis-server", err))
}

/// The loud failure for a binary that is missing or cannot run: these tests need it installed.
fn cannot_run(bin: &OsStr, env_var: &str, name: &str, err: io::Error) -> ! {
    if err.kind() == io::ErrorKind::NotFound {
        panic!(
            "`{}` not found: the Redis tests need a real {name}. Install it with \
             `apt-get install redis-server` (it brings redis-cli), or point {env_var} at the binary.",
            bin.to_string_lossy()
        );
    }
    panic!("cannot run `{}` ({env_var}): {err}", bin.to_string_lossy());
}

/// Ports handed out by this test binary, and the cluster bus ports they imply: never handed out
/// twice, so that parallel tests do not race each other for a port.
static RESERVED_PORTS: Mutex<BTreeSet<u16>> = Mutex::new(BTreeSet::new());

/// A free loopback port: bind port 0, read the port, release it. A cluster node's port must also
/// leave its bus port (`port + 10000`) free, so it is at most 55535 and that port is checked too.
pub(crate) fn free_port(cluster: bool) -> u16 {
    let mut reserved = RESERVED_PORTS
        .lock()
        .unwrap_or_else(PoisonError::into_inner);
    for _ in 0..1_000 {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind a loopback port");
        let port = listener.local_addr().expect("bound address").port();
        if reserved.contains(&port) {
            continue;
        }
        if cluster {
            let Some(bus) = port.checked_add(BUS_PORT_OFFSET) else {
                continue;
            };
            if reserved.contains(&bus) || TcpListener::bind(("127.0.0.1", bus)).is_err() {
                continue;
            }
            reserved.insert(bus);
        }
        reserved.insert(port);
        return port;
    }
    panic!("found no free loopback port in 1000 tries");
}

/// Waits (up to 5 s) until `port` can be bound, i.e. nothing listens on it any more.
fn wait_until_bindable(port: u16) {
    let deadline = Instant::now() + Duration::from_secs(5);
    while TcpListener::bind(("127.0.0.1", port)).is_err() && Instant::now() < deadline {
        thread::sleep(Duration::from_millis(100));
    }
}

/// A unique, new directory under the system temp dir.
fn unique_temp_dir() -> PathBuf {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    loop {
        let nanos = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.subsec_nanos());
        let name = format!(
            "ratewindow-redis-{}-{}-{nanos}",
            std::process::id(),
            COUNTER.fetch_add(1, Ordering::Relaxed)
        );
        let dir = env::temp_dir().join(name);
        match fs::create_dir(&dir) {
            Ok(()) => return dir,
            Err(err) if err.kind() == io::ErrorKind::AlreadyExists => continue,
            Err(err) => panic!("cannot create {}: {err}", dir.display()),
        }
    }
}

/// Whether a raw inline `PING` on `port` gets `+PONG`, or `-NOAUTH` from a server with a
/// password; anything else (refused, `-LOADING`, silence) means not yet.
fn ping_answered(port: u16) -> bool {
    let addr = SocketAddr::from(([127, 0, 0, 1], port));
    let Ok(mut stream) = TcpStream::connect_timeout(&addr, Duration::from_millis(200)) else {
        return false;
    };
    let _ = stream.set_read_timeout(Some(Duration::from_secs(1)));
    if stream.write_all(b"PING\r\n").is_err() {
        return false;
    }
    let mut buf = Vec::new();
    match read_reply(&mut stream, &mut buf, 0) {
        Ok(_) => buf.starts_with(b"+PONG") || buf.starts_with(b"-NOAUTH"),
        Err(_) => false,
    }
}

/// Appends `args` to `out` as a RESP array of bulk strings.
fn encode_command(out: &mut Vec<u8>, args: &[&str]) {
    out.extend_from_slice(format!("*{}\r\n", args.len()).as_bytes());
    for arg in args {
        out.extend_from_slice(format!("${}\r\n", arg.len()).as_bytes());
        out.extend_from_slice(arg.as_bytes());
        out.extend_from_slice(b"\r\n");
    }
}

/// Reads from `stream` into `buf` until a whole reply starts at `buf[start..]`; returns its
/// length.
fn read_reply(stream: &mut TcpStream, buf: &mut Vec<u8>, start: usize) -> io::Result<usize> {
    let mut chunk = [0; 16 * 1024];
    loop {
        if let Some(len) = reply_len(&buf[start..])? {
            return Ok(len);
        }
        let read = stream.read(&mut chunk)?;
        if read == 0 {
            return Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                format!(
                    "connection closed mid-reply: {:?}",
                    String::from_utf8_lossy(&buf[start..])
                ),
            ));
        }
        buf.extend_from_slice(&chunk[..read]);
    }
}

/// The length of the RESP2 reply at the start of `buf`, `None` while it is incomplete. Simple
/// strings, errors, integers, bulk strings and (nested) arrays.
fn reply_len(buf: &[u8]) -> io::Result<Option<usize>> {
    let Some(line_end) = buf.windows(2).position(|w| w == b"\r\n") else {
        return Ok(None);
    };
    let malformed = || {
        io::Error::new(
            io::ErrorKind::InvalidData,
            format!("malformed reply: {:?}", String::from_utf8_lossy(buf)),
        )
    };
    let after_line = line_end + 2;
    let (&kind, header) = buf[..line_end].split_first().ok_or_else(malformed)?;
    let count = || -> io::Result<i64> {
        std::str::from_utf8(header)
            .ok()
            .and_then(|text| text.parse().ok())
            .ok_or_else(malformed)
    };
    match kind {
        b'+' | b'-' | b':' => Ok(Some(after_line)),
        b'$' => match usize::try_from(count()?) {
            Err(_) => Ok(Some(after_line)), // $-1: nil
            Ok(len) => {
                let end = after_line + len + 2;
                Ok((buf.len() >= end).then_some(end))
            }
        },
        b'*' => match usize::try_from(count()?) {
            Err(_) => Ok(Some(after_line)), // *-1: nil array
            Ok(items) => {
                let mut end = after_line;
                for _ in 0..items {
                    match reply_len(&buf[end..])? {
                        Some(len) => end += len,
                        None => return Ok(None),
                    }
                }
                Ok(Some(end))
            }
        },
        _ => Err(malformed()),
    }
}

// The harness's own tests. `#[cfg(test)]` does not apply inside an integration-test module, so
// they are plain tests of the `lib` binary: `cargo test --test lib redis_server` runs them.

#[test]
fn redis_server_answers_ping_set_get() {
    let server = RedisServer::new();
    assert_eq!(
        server.url(),
        format!("redis://127.0.0.1:{}/", server.port())
    );
    assert!(server.pid().is_some());
    assert_eq!(server.command(&["PING"]), "+PONG\r\n");
    assert_eq!(server.command(&["SET", "k", "v", "PX", "60000"]), "+OK\r\n");
    assert_eq!(server.command(&["GET", "k"]), "$1\r\nv\r\n");
    assert_eq!(server.command(&["GET", "missing"]), "$-1\r\n");
    assert_eq!(server.command(&["TTL", "missing"]), ":-2\r\n");
    assert_eq!(server.command(&["KEYS", "*"]), "*1\r\n$1\r\nk\r\n");
    assert_eq!(server.command(&["DEBUG", "SLEEP", "0"]), "+OK\r\n");
    assert_eq!(server.command(&["SCRIPT", "FLUSH"]), "+OK\r\n");
    assert_eq!(server.command(&["FLUSHALL"]), "+OK\r\n");
    assert_eq!(server.command(&["KEYS", "*"]), "*0\r\n");
    assert!(server.command(&["NOSUCHCOMMAND"]).starts_with("-ERR"));
    assert!(server.log().contains("Ready to accept connections"));
}

#[test]
fn redis_server_command_reads_large_and_nested_replies() {
    let server = RedisServer::new();
    // Bigger than one read, and with CRLF inside the value.
    let value = "ab\r\n".repeat(50_000);
    assert_eq!(server.command(&["SET", "big", &value]), "+OK\r\n");
    assert_eq!(
        server.command(&["GET", "big"]),
        format!("${}\r\n{value}\r\n", value.len())
    );
    let pairs = server.command(&["CONFIG", "GET", "maxmemory-policy"]);
    assert_eq!(
        pairs,
        "*2\r\n$16\r\nmaxmemory-policy\r\n$10\r\nnoeviction\r\n"
    );

    assert_eq!(reply_len(b"*2\r\n*1\r\n:1\r\n$-1\r\n").unwrap(), Some(17));
    assert_eq!(reply_len(b"*2\r\n*1\r\n:1\r\n").unwrap(), None);
    assert_eq!(reply_len(b"$5\r\nab").unwrap(), None);
    assert_eq!(reply_len(b"*-1\r\n").unwrap(), Some(5));
    assert!(reply_len(b"?what\r\n").is_err());
}

#[test]
fn redis_server_restarts_on_the_same_port() {
    let mut server = RedisServer::new();
    let port = server.port();
    let first_pid = server.pid();
    assert_eq!(server.command(&["SET", "k", "v"]), "+OK\r\n");

    server.stop();
    assert!(!server.is_running());
    assert_eq!(server.pid(), None);
    assert!(server.try_command(&["PING"]).is_err());
    server.stop(); // a second stop is a no-op

    server.restart();
    assert_eq!(server.port(), port);
    assert_ne!(server.pid(), first_pid);
    assert_eq!(server.command(&["PING"]), "+PONG\r\n");
    assert_eq!(
        server.command(&["GET", "k"]),
        "$-1\r\n",
        "nothing is persisted"
    );

    // Restarting a running server restarts it too.
    server.restart();
    assert_eq!(server.command(&["PING"]), "+PONG\r\n");
}

#[test]
fn redis_server_passes_extra_args() {
    let server = RedisServer::with_args(&["--requirepass", "s3cret", "--maxmemory", "2mb"]);
    // `command` authenticates itself; a raw connection without AUTH is refused.
    assert_eq!(server.command(&["PING"]), "+PONG\r\n");
    assert_eq!(
        server.command(&["CONFIG", "GET", "maxmemory"]),
        "*2\r\n$9\r\nmaxmemory\r\n$7\r\n2097152\r\n"
    );
    let mut raw = TcpStream::connect(("127.0.0.1", server.port())).unwrap();
    raw.set_read_timeout(Some(IO_TIMEOUT)).unwrap();
    raw.write_all(b"PING\r\n").unwrap();
    let mut buf = Vec::new();
    read_reply(&mut raw, &mut buf, 0).unwrap();
    assert!(
        buf.starts_with(b"-NOAUTH"),
        "{:?}",
        String::from_utf8_lossy(&buf)
    );
}

#[test]
fn redis_servers_in_one_test_are_independent() {
    let servers: Vec<RedisServer> = (0..3).map(|_| RedisServer::new()).collect();
    let ports: BTreeSet<u16> = servers.iter().map(RedisServer::port).collect();
    assert_eq!(ports.len(), 3);
    let dirs: BTreeSet<&Path> = servers.iter().map(|s| s.dir.as_path()).collect();
    assert_eq!(dirs.len(), 3);
    assert_eq!(servers[0].command(&["SET", "only-here", "1"]), "+OK\r\n");
    assert_eq!(servers[1].command(&["EXISTS", "only-here"]), ":0\r\n");

    let dir = servers[2].dir.clone();
    drop(servers);
    assert!(!dir.exists(), "the temp dir is removed on drop");
}

#[test]
fn redis_server_never_takes_a_port_served_by_another_server() {
    let first = RedisServer::new();
    let mut second = RedisServer {
        port: first.port(),
        dir: unique_temp_dir(),
        extra_args: Vec::new(),
        cluster: false,
        child: None,
    };
    // Either the child fails to bind, or it is caught answering for `first`: never adopted.
    let failure = second.spawn_and_wait().unwrap_err();
    assert!(failure.contains(&first.port().to_string()), "{failure}");
    assert!(!second.is_running());
    assert_eq!(first.command(&["PING"]), "+PONG\r\n");
}

#[test]
#[should_panic(expected = "apt-get install redis-server")]
fn redis_server_missing_binary_fails_loudly() {
    major_version(OsStr::new("/nonexistent/redis-server"));
}

/// Sums the slot ranges (`0-5460`, `5461`) of every master line of `CLUSTER NODES`; returns the
/// number of masters and of slots.
fn masters_and_slots(nodes: &str) -> (usize, u32) {
    let mut masters = 0;
    let mut slots = 0;
    for line in nodes.lines().filter(|line| line.contains("master")) {
        masters += 1;
        for range in line.split(' ').skip(8) {
            let (first, last) = range.split_once('-').unwrap_or((range, range));
            slots += last.parse::<u32>().unwrap() - first.parse::<u32>().unwrap() + 1;
        }
    }
    (masters, slots)
}

#[test]
fn redis_server_cluster_has_three_masters_over_all_slots() {
    let cluster = RedisCluster::new();
    assert_eq!(cluster.urls().len(), 3);
    for node in cluster.nodes() {
        let info = node.command(&["CLUSTER", "INFO"]);
        assert!(info.contains("cluster_state:ok"), "{info}");
        assert!(info.contains("cluster_slots_assigned:16384"), "{info}");
        assert!(info.contains("cluster_known_nodes:3"), "{info}");
        assert!(info.contains("cluster_size:3"), "{info}");
        let nodes = node.command(&["CLUSTER", "NODES"]);
        assert_eq!(masters_and_slots(&nodes), (3, 16384), "{nodes}");
        // Three slot ranges, one per master, each `*3` (start, end, master without replicas).
        let slots = node.command(&["CLUSTER", "SLOTS"]);
        assert!(slots.starts_with("*3\r\n"), "{slots}");
        assert_eq!(slots.matches("\r\n*3\r\n").count(), 3, "{slots}");
    }
    // A key lives on exactly one master; the others redirect.
    let answers: Vec<String> = cluster
        .nodes()
        .iter()
        .map(|node| node.command(&["SET", "{user}:1", "v"]))
        .collect();
    assert_eq!(answers.iter().filter(|a| *a == "+OK\r\n").count(), 1);
    assert_eq!(
        answers.iter().filter(|a| a.starts_with("-MOVED")).count(),
        2
    );
}

#[test]
fn redis_server_cluster_with_replicas_has_one_in_sync_replica_per_master() {
    let cluster = RedisCluster::with_replicas(&[]);
    assert_eq!(cluster.urls().len(), 6);
    let masters: Vec<usize> = (0..6).filter(|&i| cluster.is_master(i)).collect();
    assert_eq!(masters.len(), 3, "{masters:?}");
    let mut replicas: Vec<usize> = masters.iter().map(|&m| cluster.replica_of(m)).collect();
    replicas.sort_unstable();
    replicas.dedup();
    assert_eq!(replicas.len(), 3, "one replica each: {replicas:?}");
    assert!(replicas.iter().all(|r| !masters.contains(r)));
    let nodes = cluster.nodes()[0].command(&["CLUSTER", "NODES"]);
    assert_eq!(masters_and_slots(&nodes), (3, 16384), "{nodes}");
}

#[test]
fn redis_server_cluster_node_stops_and_rejoins() {
    let mut cluster = RedisCluster::new();
    let port = cluster.nodes()[2].port();
    cluster.nodes_mut()[2].stop();
    // Its slots are uncovered once the others mark it failed (node timeout 2 s).
    cluster.wait_for_state("fail", CLUSTER_TIMEOUT);

    cluster.nodes_mut()[2].restart();
    assert_eq!(cluster.nodes()[2].port(), port);
    cluster.wait_for_state("ok", CLUSTER_TIMEOUT);
    for node in cluster.nodes() {
        let nodes = node.command(&["CLUSTER", "NODES"]);
        assert_eq!(masters_and_slots(&nodes), (3, 16384), "{nodes}");
    }
}
