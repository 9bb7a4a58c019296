//! radiantd's configuration: only what transport and timing need.
//!
//! Everything else (cluster id, shard count, who is in the station) comes from the station, as
//! in Halon: a node is configured for the bootstrap alone. Parsing is two steps: [`RawConfig`]
//! is what the TOML file says, [`Config::validate`] checks it and resolves defaults, so that
//! `radiantd --check-config` and a real start share exactly one rule set.

use std::net::SocketAddr;
use std::net::ToSocketAddrs;
use std::path::Path;
use std::path::PathBuf;
use std::time::Duration;

use serde::Deserialize;

/// The only config format this build reads.
pub const CONFIG_VERSION: u32 = 1;

/// Default client/peer port.
pub const DEFAULT_PORT: u16 = 7400;

/// A configuration problem, always attributable to one file and (where it applies) one key.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file could not be read at all.
    #[error("{path}: cannot read config: {source}")]
    Read {
        /// The config file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// TOML syntax, an unknown key, or a value of the wrong type.
    #[error("{path}: {location}{message}")]
    Parse {
        /// The config file.
        path: PathBuf,
        /// `line N: ` where the parser knows it.
        location: String,
        /// The parser's one-line message.
        message: String,
    },
    /// A key that must be present is absent.
    #[error("{path}: missing required key `{key}`")]
    Missing {
        /// The config file.
        path: PathBuf,
        /// The key.
        key: &'static str,
    },
    /// A key is present but its value is not acceptable.
    #[error("{path}: invalid `{key}`: {reason}")]
    Invalid {
        /// The config file.
        path: PathBuf,
        /// The key.
        key: &'static str,
        /// Why the value is refused.
        reason: String,
    },
}

/// The config file as written, before any check.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawConfig {
    /// Format version; absent means the current one.
    pub version: Option<u32>,
    /// Human name of this node; defaults to the advertise address.
    pub name: Option<String>,
    /// Address the gRPC server binds.
    pub listen: Option<String>,
    /// Address peers and clients use to reach this node; defaults to `listen`.
    pub advertise: Option<String>,
    /// Directory of the node's persistent state.
    pub data_dir: Option<PathBuf>,
    /// Raft heartbeat interval.
    pub heartbeat_ms: Option<u64>,
    /// Raft election timeout (lower bound; the upper bound is 1.5 times this).
    pub election_timeout_ms: Option<u64>,
    /// Base delay between phone-home attempts (jittered, doubled up to 16x).
    pub phone_home_backoff_ms: Option<u64>,
    /// Raft log entries between snapshots of a group's state machine.
    pub snapshot_logs: Option<u64>,
}

/// Validated configuration.
#[derive(Debug, Clone)]
pub struct Config {
    /// Node name.
    pub name: String,
    /// Bind address.
    pub listen: SocketAddr,
    /// Address others reach this node at, as `host:port` (the node id derives from it).
    pub advertise: String,
    /// Persistent state directory (exists and is writable after validation).
    pub data_dir: PathBuf,
    /// Timing shared by every Raft group on this node.
    pub timing: Timing,
}

/// Timing knobs, validated against each other.
#[derive(Debug, Clone, Copy)]
pub struct Timing {
    /// Raft heartbeat interval.
    pub heartbeat: Duration,
    /// Lower bound of the Raft election timeout.
    pub election_timeout: Duration,
    /// Base phone-home retry delay.
    pub phone_home_backoff: Duration,
    /// Log entries between snapshots.
    pub snapshot_logs: u64,
}

impl Default for Timing {
    fn default() -> Self {
        Self {
            // Measured (bench/RESULTS.md, herald failover): a killed herald's successor takes
            // writes after 0.49 s median with these, 0.75 s with 100/250, and no spurious
            // election happened under 64-client load on 2 busy cores with either.
            heartbeat: Duration::from_millis(50),
            election_timeout: Duration::from_millis(150),
            phone_home_backoff: Duration::from_millis(300),
            snapshot_logs: 5000,
        }
    }
}

impl Timing {
    /// How long the bondsmith waits without a heartbeat before it marks a node down.
    pub fn down_after(&self) -> Duration {
        (self.election_timeout * 6).max(Duration::from_secs(3))
    }

    /// How often nodes send liveness heartbeats to the bondsmith.
    pub fn liveness_interval(&self) -> Duration {
        (self.election_timeout).max(Duration::from_millis(200))
    }
}

impl Config {
    /// Reads and validates a config file.
    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        let text =
            std::fs::read_to_string(path).map_err(|source| ConfigError::Read { path: path.to_path_buf(), source })?;
        Self::parse(path, &text)
    }

    /// Parses and validates config text; `path` is used in messages only.
    pub fn parse(path: &Path, text: &str) -> Result<Config, ConfigError> {
        let raw: RawConfig = toml::from_str(text).map_err(|e| {
            let location = e
                .span()
                .map(|s| {
                    let line = line_of(text, s.start);
                    match key_on_line(text, line) {
                        Some(key) => format!("line {line}, key `{key}`: "),
                        None => format!("line {line}: "),
                    }
                })
                .unwrap_or_default();
            ConfigError::Parse {
                path: path.to_path_buf(),
                location,
                message: e.message().replace('\n', " ").trim().to_string(),
            }
        })?;
        raw.validate(path)
    }
}

impl RawConfig {
    /// Checks every key and the rules between keys, and prepares the data dir.
    pub fn validate(self, path: &Path) -> Result<Config, ConfigError> {
        let invalid =
            |key: &'static str, reason: String| ConfigError::Invalid { path: path.to_path_buf(), key, reason };
        if let Some(v) = self.version
            && v != CONFIG_VERSION
        {
            return Err(invalid("version", format!("this radiantd reads version {CONFIG_VERSION}, the file says {v}")));
        }
        let listen_text = self.listen.ok_or(ConfigError::Missing { path: path.to_path_buf(), key: "listen" })?;
        let listen = parse_addr(&listen_text).map_err(|r| invalid("listen", r))?;
        let advertise = match self.advertise {
            Some(a) => {
                parse_addr(&a).map_err(|r| invalid("advertise", r))?;
                a
            }
            None if listen.ip().is_unspecified() => {
                return Err(invalid("advertise", format!("required when `listen` is the wildcard address {listen}")));
            }
            None => listen.to_string(),
        };
        if advertise.ends_with(":0") {
            return Err(invalid("advertise", "port 0 cannot be advertised; give a fixed port".into()));
        }
        let name = match self.name {
            Some(n) if n.trim().is_empty() => return Err(invalid("name", "must not be empty".into())),
            Some(n) if n.len() > 128 => return Err(invalid("name", "longer than 128 bytes".into())),
            Some(n) => n,
            None => advertise.clone(),
        };
        let data_dir = self.data_dir.ok_or(ConfigError::Missing { path: path.to_path_buf(), key: "data_dir" })?;
        prepare_data_dir(&data_dir).map_err(|r| invalid("data_dir", r))?;

        let defaults = Timing::default();
        let heartbeat = self.heartbeat_ms.map(Duration::from_millis).unwrap_or(defaults.heartbeat);
        let election_timeout = self.election_timeout_ms.map(Duration::from_millis).unwrap_or(defaults.election_timeout);
        let phone_home_backoff =
            self.phone_home_backoff_ms.map(Duration::from_millis).unwrap_or(defaults.phone_home_backoff);
        if heartbeat.is_zero() {
            return Err(invalid("heartbeat_ms", "must be above 0".into()));
        }
        if election_timeout <= heartbeat * 2 {
            return Err(invalid(
                "election_timeout_ms",
                format!(
                    "must be more than twice heartbeat_ms ({} ms), got {} ms",
                    heartbeat.as_millis(),
                    election_timeout.as_millis()
                ),
            ));
        }
        let snapshot_logs = self.snapshot_logs.unwrap_or(defaults.snapshot_logs);
        if snapshot_logs < 10 {
            return Err(invalid("snapshot_logs", format!("must be at least 10, got {snapshot_logs}")));
        }
        if phone_home_backoff.is_zero() {
            return Err(invalid("phone_home_backoff_ms", "must be above 0".into()));
        }
        Ok(Config {
            name,
            listen,
            advertise,
            data_dir,
            timing: Timing { heartbeat, election_timeout, phone_home_backoff, snapshot_logs },
        })
    }
}

/// Parses `host:port`, resolving a host name, so a typo fails at start and not at first use.
pub fn parse_addr(text: &str) -> Result<SocketAddr, String> {
    if let Ok(a) = text.parse::<SocketAddr>() {
        return Ok(a);
    }
    let (host, port) = text.rsplit_once(':').ok_or_else(|| format!("{text:?} is not host:port"))?;
    if host.is_empty() {
        return Err(format!("{text:?} has no host"));
    }
    port.parse::<u16>().map_err(|_| format!("{text:?} has no valid port"))?;
    text.to_socket_addrs()
        .map_err(|e| format!("{text:?} does not resolve: {e}"))?
        .next()
        .ok_or_else(|| format!("{text:?} resolves to no address"))
}

fn prepare_data_dir(dir: &Path) -> Result<(), String> {
    if dir.as_os_str().is_empty() {
        return Err("must not be empty".into());
    }
    std::fs::create_dir_all(dir).map_err(|e| format!("cannot create {}: {e}", dir.display()))?;
    let probe = dir.join(".radiantd-write-probe");
    std::fs::write(&probe, b"probe").map_err(|e| format!("{} is not writable: {e}", dir.display()))?;
    let _ = std::fs::remove_file(&probe);
    Ok(())
}

/// The key assigned on a `key = value` line, so a type error names the key.
fn key_on_line(text: &str, line: usize) -> Option<&str> {
    let l = text.lines().nth(line.checked_sub(1)?)?;
    let (key, _) = l.split_once('=')?;
    let key = key.trim();
    (!key.is_empty() && !key.starts_with('[')).then_some(key)
}

fn line_of(text: &str, offset: usize) -> usize {
    text[..offset.min(text.len())].matches('\n').count() + 1
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Result<Config, ConfigError> {
        Config::parse(Path::new("t.toml"), text)
    }

    #[test]
    fn minimal_config_gets_defaults() {
        let dir = tempfile::tempdir().unwrap();
        let text = format!("listen = \"127.0.0.1:7400\"\ndata_dir = {:?}\n", dir.path());
        let c = parse(&text).unwrap();
        assert_eq!(c.advertise, "127.0.0.1:7400");
        assert_eq!(c.name, "127.0.0.1:7400");
        assert_eq!(c.timing.heartbeat, Duration::from_millis(50));
    }

    #[test]
    fn unknown_key_names_the_key_and_line() {
        let err = parse("listen = \"127.0.0.1:1\"\ncolour = 3\n").unwrap_err().to_string();
        assert!(err.contains("colour"), "{err}");
        assert!(err.contains("line 2"), "{err}");
        assert!(!err.contains('\n'));
    }

    #[test]
    fn bad_address_and_timing_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        let d = format!("data_dir = {:?}\n", dir.path());
        let e = parse(&format!("listen = \"nonsense\"\n{d}")).unwrap_err().to_string();
        assert!(e.contains("`listen`"), "{e}");
        let e = parse(&format!("listen = \"0.0.0.0:1\"\n{d}")).unwrap_err().to_string();
        assert!(e.contains("`advertise`"), "{e}");
        let e = parse(&format!("listen = \"127.0.0.1:1\"\nheartbeat_ms = 100\nelection_timeout_ms = 150\n{d}"))
            .unwrap_err()
            .to_string();
        assert!(e.contains("election_timeout_ms"), "{e}");
    }

    #[test]
    fn missing_data_dir_is_refused() {
        let e = parse("listen = \"127.0.0.1:1\"\n").unwrap_err().to_string();
        assert!(e.contains("data_dir"), "{e}");
    }
}
