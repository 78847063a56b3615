//! A PostgreSQL server owned by one test: initdb into a temporary directory, a free port,
//! stopped and removed in `Drop`. As root (CI), the server runs as the `postgres` user.

use std::net::TcpListener;
use std::path::PathBuf;
use std::process::Command;

use chatstream::testkit::skip_or_fail;

#[derive(Debug)]
pub(crate) struct OwnPostgres {
    bin: PathBuf,
    dir: PathBuf,
    pub(crate) port: u16,
    as_postgres: bool,
}

/// The directory holding `initdb` and `pg_ctl`: on `PATH`, else Debian's
/// `/usr/lib/postgresql/<newest>/bin`.
fn bin_dir() -> Option<PathBuf> {
    if let Ok(out) = Command::new("pg_config").arg("--bindir").output() {
        let dir = PathBuf::from(String::from_utf8_lossy(&out.stdout).trim());
        if dir.join("initdb").exists() {
            return Some(dir);
        }
    }
    let mut versions: Vec<(u32, PathBuf)> = std::fs::read_dir("/usr/lib/postgresql")
        .ok()?
        .filter_map(|e| {
            let e = e.ok()?;
            let v = e.file_name().to_string_lossy().parse().ok()?;
            let bin = e.path().join("bin");
            bin.join("initdb").exists().then_some((v, bin))
        })
        .collect();
    versions.sort();
    versions.pop().map(|(_, b)| b)
}

fn is_root() -> bool {
    Command::new("id")
        .arg("-u")
        .output()
        .is_ok_and(|o| String::from_utf8_lossy(&o.stdout).trim() == "0")
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .unwrap_or_else(|e| panic!("free port: {e}"))
}

impl OwnPostgres {
    /// A fresh server, started; `None` (skipped) when PostgreSQL is not installed.
    pub(crate) fn start() -> Option<Self> {
        let Some(bin) = bin_dir() else {
            return skip_or_fail("a PostgreSQL installation (initdb)", "not found");
        };
        let dir = std::env::temp_dir().join(format!("cs-pg-{}", uuid::Uuid::new_v4().simple()));
        std::fs::create_dir_all(&dir).unwrap_or_else(|e| panic!("{dir:?}: {e}"));
        let me = Self {
            bin,
            dir,
            port: free_port(),
            as_postgres: is_root(),
        };
        if me.as_postgres {
            me.run("chown", &["postgres:".as_ref(), me.dir.as_os_str()], false);
        }
        let data = me.dir.join("data");
        me.run(
            "initdb",
            &[
                "-D".as_ref(),
                data.as_os_str(),
                "-A".as_ref(),
                "trust".as_ref(),
                "-U".as_ref(),
                "postgres".as_ref(),
                "--no-sync".as_ref(),
            ],
            true,
        );
        me.up();
        Some(me)
    }

    /// The server's URL (database `postgres`).
    pub(crate) fn url(&self) -> String {
        format!("postgres://postgres@127.0.0.1:{}/postgres", self.port)
    }

    fn run(&self, program: &str, args: &[&std::ffi::OsStr], postgres_tool: bool) {
        let path = if postgres_tool {
            self.bin.join(program)
        } else {
            PathBuf::from(program)
        };
        let mut cmd = if self.as_postgres && postgres_tool {
            let mut c = Command::new("runuser");
            c.args(["-u", "postgres", "--"]).arg(&path);
            c
        } else {
            Command::new(&path)
        };
        let out = cmd
            .args(args)
            .output()
            .unwrap_or_else(|e| panic!("{path:?}: {e}"));
        assert!(
            out.status.success(),
            "{program} {args:?}: {}\n{}{}",
            out.status,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }

    fn pg_ctl(&self, args: &[&str]) {
        let data = self.dir.join("data");
        let log = self.dir.join("log");
        let mut all: Vec<&std::ffi::OsStr> = vec!["-D".as_ref(), data.as_os_str()];
        all.extend(["-l".as_ref(), log.as_os_str()]);
        all.extend(args.iter().map(std::ffi::OsStr::new));
        self.run("pg_ctl", &all, true);
    }

    /// Starts the server and waits until it accepts connections.
    pub(crate) fn up(&self) {
        let opts = format!(
            "-p {} -k {} -c listen_addresses=127.0.0.1 -c fsync=off",
            self.port,
            self.dir.display()
        );
        self.pg_ctl(&["-w", "-t", "60", "-o", &opts, "start"]);
    }

    /// Stops the server (fast shutdown: sessions are cut, as in a restart).
    pub(crate) fn down(&self) {
        self.pg_ctl(&["-w", "-t", "60", "-m", "fast", "stop"]);
    }
}

impl Drop for OwnPostgres {
    fn drop(&mut self) {
        let data = self.dir.join("data");
        let mut cmd = if self.as_postgres {
            let mut c = Command::new("runuser");
            c.args(["-u", "postgres", "--"])
                .arg(self.bin.join("pg_ctl"));
            c
        } else {
            Command::new(self.bin.join("pg_ctl"))
        };
        let _ = cmd
            .arg("-D")
            .arg(&data)
            .args(["-m", "immediate", "-w", "stop"])
            .output();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}
