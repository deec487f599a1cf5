//! Command line and environment → a validated [`Config`].
//!
//! `Args` is what the user typed (clap, with env fallbacks); `Config` is what the node runs
//! with, every default applied and every value checked.

use std::net::SocketAddr;
use std::path::PathBuf;

use clap::{Args as ClapArgs, Parser, Subcommand};

use crate::private_file::write_private;
// Where they were first defined; the client parses the same units.
pub use crate::units::{parse_duration, parse_size};

#[derive(Parser, Debug)]
#[command(
    name = "diststore",
    version,
    about = "A distributed, content-addressed, encrypted file store",
    args_conflicts_with_subcommands = true
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Option<Command>,
    #[command(flatten)]
    pub serve: ServeArgs,
}

#[derive(Subcommand, Debug)]
pub enum Command {
    /// Run a node (the default when no command is given).
    Serve(Box<ServeArgs>),
    /// Compact the database of a stopped node, returning the space deleted content left in
    /// its file to the disk.
    Compact(CompactArgs),
    /// Verify a stopped node's data directory: every chunk, manifest and name.
    Check(CheckArgs),
    /// Write files out of a stopped node's data directory, verified, skipping damaged ones.
    Export(ExportArgs),
    /// Client commands: talk to a node over its native API.
    #[command(flatten)]
    Client(crate::client::Command),
}

/// What the offline tools (`check`, `export`) share: which data directory, and its secret.
#[derive(ClapArgs, Debug, Clone)]
pub struct OfflineArgs {
    /// The stopped node's data directory.
    #[arg(long, env = "DISTSTORE_DATA_DIR", value_name = "DIR", default_value = "./diststore-data")]
    pub data_dir: PathBuf,

    /// File holding the cluster secret (default: DATA_DIR/secret, as the node made it).
    #[arg(long, value_name = "FILE", conflicts_with = "secret")]
    pub secret_file: Option<PathBuf>,

    /// The cluster secret itself (prefer --secret-file: environments leak).
    #[arg(long, env = "DISTSTORE_SECRET", hide_env_values = true, value_name = "SECRET")]
    pub secret: Option<String>,

    /// Threads verifying chunks. Default: one per CPU.
    #[arg(long, value_name = "N")]
    pub threads: Option<usize>,

    /// Print the result as one JSON document (for scripts).
    #[arg(long)]
    pub json: bool,
}

impl OfflineArgs {
    /// Where the secret comes from. Unlike `serve`, a missing DATA_DIR/secret is an error: a
    /// new secret could open nothing stored.
    pub fn secret_source(&self) -> Result<SecretSource, ConfigError> {
        Ok(match (&self.secret_file, &self.secret) {
            (Some(path), _) => SecretSource::File(path.clone()),
            (None, Some(value)) if value.is_empty() => return Err(ConfigError::EmptySecret),
            (None, Some(value)) => SecretSource::Value(value.clone()),
            (None, None) => SecretSource::File(self.data_dir.join("secret")),
        })
    }

    pub fn threads(&self) -> usize {
        self.threads
            .filter(|n| *n > 0)
            .unwrap_or_else(|| std::thread::available_parallelism().map_or(1, |n| n.get()))
    }
}

#[derive(ClapArgs, Debug, Clone)]
pub struct CheckArgs {
    #[command(flatten)]
    pub offline: OfflineArgs,

    /// Chunks this node does not hold are not problems (a cluster node holds only its share;
    /// the others hold the rest). Damage still is.
    #[arg(long)]
    pub allow_missing: bool,
}

#[derive(ClapArgs, Debug, Clone)]
pub struct ExportArgs {
    #[command(flatten)]
    pub offline: OfflineArgs,

    /// Export the files whose names start with this ("" for all).
    #[arg(value_name = "PREFIX")]
    pub prefix: String,

    /// Directory to write them under (created if missing); a name `a/b` becomes DEST/a/b.
    #[arg(value_name = "DEST")]
    pub dest: PathBuf,
}

#[derive(ClapArgs, Debug, Clone)]
pub struct CompactArgs {
    /// The node's data directory (the node must not be running on it).
    #[arg(long, env = "DISTSTORE_DATA_DIR", value_name = "DIR", default_value = "./diststore-data")]
    pub data_dir: PathBuf,
}

#[derive(ClapArgs, Debug, Clone)]
#[command(group = clap::ArgGroup::new("s3_secret").args(["s3_secret_key_file", "s3_secret_key"]).multiple(false))]
pub struct ServeArgs {
    /// Address to serve the API, the web UI and peer links on. Defaults to 127.0.0.1:8080,
    /// or 127.0.0.1:$PORT when PORT is set (as the original program honoured it).
    /// A host name is resolved once at start (`localhost:8080` listens on 127.0.0.1:8080).
    #[arg(long, env = "DISTSTORE_LISTEN", value_name = "ADDR", value_parser = parse_listen)]
    pub listen: Option<SocketAddr>,

    /// Which log lines are written: off, error, warn, info, debug or trace, for every module
    /// (femme, the logger, has one level). Without it RUST_LOG is read as a level; without
    /// both, `info`.
    #[arg(long, env = "DISTSTORE_LOG_LEVEL", value_name = "LEVEL")]
    pub log_level: Option<log::LevelFilter>,

    /// Log one line per HTTP request: method, route template (never the raw path), status,
    /// response bytes and time to the response head, under the target `diststore::access`.
    #[arg(long, env = "DISTSTORE_ACCESS_LOG")]
    pub access_log: bool,

    /// Directory holding the database and, unless given elsewhere, the secret.
    #[arg(long, env = "DISTSTORE_DATA_DIR", value_name = "DIR", default_value = "./diststore-data")]
    pub data_dir: PathBuf,

    /// File holding the cluster secret; the data key derives from it. Without this flag or
    /// DISTSTORE_SECRET, a secret is generated on first start as DATA_DIR/secret (mode 0600).
    #[arg(long, value_name = "FILE", conflicts_with = "secret")]
    pub secret_file: Option<PathBuf>,

    /// The cluster secret itself (prefer --secret-file: environments leak).
    #[arg(long, env = "DISTSTORE_SECRET", hide_env_values = true, value_name = "SECRET")]
    pub secret: Option<String>,

    /// Largest accepted upload, e.g. 500MiB, 64GiB or a byte count; larger bodies get 413.
    #[arg(long, env = "DISTSTORE_MAX_UPLOAD_SIZE", value_name = "SIZE", default_value = "64GiB", value_parser = parse_size)]
    pub max_upload_size: u64,

    /// Database page cache size, e.g. 64MiB. Bounds the node's memory with the upload queues.
    #[arg(long, env = "DISTSTORE_CACHE_SIZE", value_name = "SIZE", default_value = "32MiB", value_parser = parse_size)]
    pub cache_size: u64,

    /// Bytes per second the background scrub re-verifies stored chunks at (a pass at start,
    /// then daily), e.g. 32MiB; 0 turns it off. Damaged copies are dropped and fetched again
    /// from other holders.
    #[arg(long, env = "DISTSTORE_SCRUB_RATE", value_name = "SIZE", default_value = "32MiB", value_parser = parse_size)]
    pub scrub_rate: u64,

    /// Free disk space kept in reserve, e.g. 256MiB; 0 keeps none. Uploads get 507 while the
    /// data disk has less free, so deletes, the collector and recovery from a full disk always
    /// have room.
    #[arg(long, env = "DISTSTORE_DISK_RESERVE", value_name = "SIZE", default_value = "128MiB", value_parser = parse_size)]
    pub disk_reserve: u64,

    /// Bearer token required on /api and /metrics (at least 32 characters; make one with
    /// `openssl rand -hex 32`). Required when listening on a non-loopback address, unless
    /// --open-api is given.
    #[arg(long, env = "DISTSTORE_API_TOKEN", hide_env_values = true, value_name = "TOKEN")]
    pub api_token: Option<String>,

    /// Serve the API without a token on a non-loopback address (only behind another guard).
    #[arg(long, env = "DISTSTORE_OPEN_API")]
    pub open_api: bool,

    /// A cluster member to join through (repeatable; DISTSTORE_PEERS takes a comma-separated
    /// list). The others are learned from it. All members must share the secret.
    #[arg(long = "peer", env = "DISTSTORE_PEERS", value_name = "URL", value_delimiter = ',')]
    pub peers: Vec<String>,

    /// How many nodes hold each chunk.
    #[arg(long, env = "DISTSTORE_REPLICATION", value_name = "N", default_value_t = 2)]
    pub replication: usize,

    /// Fewest reachable nodes (this one included) that accept a write in a cluster; with
    /// fewer, uploads get 503. Default: --replication, so a 201 means that many copies. Lower
    /// it to keep taking writes with fewer copies (repair adds the rest later).
    #[arg(long, env = "DISTSTORE_MIN_REPLICAS", value_name = "N")]
    pub min_replicas: Option<usize>,

    /// How long a member may be unreachable before its chunks are copied to other nodes, e.g.
    /// 10m (as Ceph's down-out interval). A restart or a short outage inside it copies nothing;
    /// meanwhile its chunks have one copy fewer, and writes go to the next nodes in line.
    #[arg(long, env = "DISTSTORE_DOWN_OUT_AFTER", value_name = "DURATION", default_value = "10m", value_parser = parse_duration)]
    pub down_out_after: std::time::Duration,

    /// Chunks repair copies to this node (or verifies on others before dropping a surplus
    /// copy) per second at most, when nodes join, leave, drain or are removed, and when
    /// chunks are found missing. Default 100: at most 100 MiB/s at the largest chunk.
    #[arg(long, env = "DISTSTORE_REPAIR_RATE", value_name = "CHUNKS", default_value_t = crate::cluster::DEFAULT_REPAIR_RATE, value_parser = clap::value_parser!(u32).range(1..))]
    pub repair_rate: u32,

    /// URL other nodes reach this one at (default: http://LISTEN address as bound). Needed
    /// when listening on 0.0.0.0 behind an address peers cannot derive (NAT, a proxy).
    #[arg(long, env = "DISTSTORE_ADVERTISE", value_name = "URL")]
    pub advertise: Option<String>,

    /// A host name the API and UI answer to (repeatable), beside IP addresses, localhost and
    /// the --advertise host; requests naming any other `Host` are refused (DNS rebinding).
    #[arg(
        long = "allowed-host",
        env = "DISTSTORE_ALLOWED_HOSTS",
        value_name = "NAME",
        value_delimiter = ','
    )]
    pub allowed_hosts: Vec<String>,

    /// Address of the S3 endpoint, or `off`.
    #[arg(long, env = "DISTSTORE_S3_LISTEN", value_name = "ADDR|off", default_value = "127.0.0.1:3900")]
    pub s3_listen: String,

    /// Serve virtual-host style S3 requests (`bucket.DOMAIN`) as well as path style.
    #[arg(long, env = "DISTSTORE_S3_DOMAIN", value_name = "DOMAIN")]
    pub s3_domain: Option<String>,

    /// The region the S3 endpoint reports and expects in signatures.
    #[arg(long, env = "DISTSTORE_S3_REGION", value_name = "REGION", default_value = "us-east-1")]
    pub s3_region: String,

    /// The S3 root access key (imported as given; with --s3-secret-key or its file). Without
    /// them, the first start generates a root key and writes it to DATA_DIR/s3-root-key.
    #[arg(long, env = "DISTSTORE_S3_ACCESS_KEY", value_name = "KEY", requires = "s3_secret")]
    pub s3_access_key: Option<String>,

    /// File holding the S3 root secret key (preferred over --s3-secret-key: environments leak).
    #[arg(long, value_name = "FILE", conflicts_with = "s3_secret_key")]
    pub s3_secret_key_file: Option<PathBuf>,

    /// The S3 root secret key itself.
    #[arg(long, env = "DISTSTORE_S3_SECRET_KEY", hide_env_values = true, value_name = "SECRET")]
    pub s3_secret_key: Option<String>,

    /// Multipart uploads older than this are aborted and their parts collected, e.g. 24h.
    #[arg(long, env = "DISTSTORE_S3_MULTIPART_MAX_AGE", value_name = "DURATION", default_value = "24h", value_parser = parse_duration)]
    pub s3_multipart_max_age: std::time::Duration,

    /// On SIGTERM or Ctrl-C, how long uploads in flight may take to finish (new ones get 503)
    /// before the node stops anyway, e.g. 30s. An upload cut off is not kept, whole or at all.
    #[arg(long, env = "DISTSTORE_SHUTDOWN_GRACE", value_name = "DURATION", default_value = "30s", value_parser = parse_duration)]
    pub shutdown_grace: std::time::Duration,
    /// Resumable uploads that received no byte for this long are removed, e.g. 24h.
    #[arg(long, env = "DISTSTORE_UPLOAD_EXPIRY", value_name = "DURATION", default_value = "24h", value_parser = parse_duration)]
    pub upload_expiry: std::time::Duration,

    /// Most unfinished resumable uploads at once; more get 503 until some finish or expire.
    #[arg(long, env = "DISTSTORE_MAX_RESUMABLE_UPLOADS", value_name = "N", default_value_t = 64)]
    pub max_resumable_uploads: usize,

    /// Disk space unfinished resumable uploads may reserve together (by their declared
    /// lengths, in DATA_DIR/uploads), e.g. 100GiB; more get 507.
    #[arg(long, env = "DISTSTORE_UPLOAD_SPOOL_SIZE", value_name = "SIZE", default_value = "64GiB", value_parser = parse_size)]
    pub upload_spool_size: u64,

    /// Tests only: how long a restarted node waits to hear from its members, e.g. 10s.
    #[arg(long, hide = true, env = "DISTSTORE_SETTLE", value_parser = parse_duration)]
    pub settle: Option<std::time::Duration>,

    /// Tests only: the collector's period, e.g. 60s.
    #[arg(long, hide = true, env = "DISTSTORE_GC_PERIOD", value_parser = parse_duration)]
    pub gc_period: Option<std::time::Duration>,

    /// Tests only: the time between scrub passes, e.g. 24h.
    #[arg(long, hide = true, env = "DISTSTORE_SCRUB_PERIOD", value_parser = parse_duration)]
    pub scrub_period: Option<std::time::Duration>,

    /// Tests only: how long confirmed chunks await their manifest, e.g. 15m.
    #[arg(long, hide = true, env = "DISTSTORE_RECEIVED_GRACE", value_parser = parse_duration)]
    pub received_grace: Option<std::time::Duration>,

    /// Tests only: the anti-entropy period, e.g. 5s.
    #[arg(long, hide = true, env = "DISTSTORE_SYNC_PERIOD", value_parser = parse_duration)]
    pub sync_period: Option<std::time::Duration>,

    /// Threads running the network tasks (HTTP, peer links). Hashing, encryption and the
    /// database have threads of their own, so these mostly wait on sockets. Default: half the
    /// CPUs, at least one.
    #[arg(long, env = "DISTSTORE_IO_THREADS", value_name = "N")]
    pub io_threads: Option<usize>,

    // Resource bounds of the HTTP and S3 fronts (issue 12).
    /// Open connections each listener (HTTP, S3) serves at once; more are answered 503 and
    /// closed. Default: 1024, or a quarter of the open-file limit when that is lower.
    #[arg(long, env = "DISTSTORE_MAX_CONNECTIONS", value_name = "N")]
    pub max_connections: Option<usize>,

    /// Longest request head (request line and headers), refused before it is buffered; also
    /// bounds a multipart body's preamble and part headers. At most 8KiB, the HTTP parser's
    /// own ceiling.
    #[arg(long, env = "DISTSTORE_MAX_HEAD_SIZE", value_name = "SIZE", default_value = "8KiB", value_parser = parse_size)]
    pub max_head_size: u64,

    /// Time a request head may take to arrive, and an idle kept-alive connection stays open
    /// (at most 60s, the HTTP parser's own limit).
    #[arg(long, env = "DISTSTORE_HEADER_TIMEOUT", value_name = "DURATION", default_value = "20s", value_parser = parse_duration)]
    pub header_timeout: std::time::Duration,

    /// Time a request body may send nothing before the request fails, its partial upload is
    /// dropped and the connection is closed.
    #[arg(long, env = "DISTSTORE_BODY_IDLE_TIMEOUT", value_name = "DURATION", default_value = "30s", value_parser = parse_duration)]
    pub body_idle_timeout: std::time::Duration,

    /// Uploads in flight at once (native, legacy and S3 together); more get 503. Each holds
    /// four threads of its own and up to about 10 MiB of queued blocks.
    #[arg(long, env = "DISTSTORE_MAX_UPLOADS", value_name = "N", default_value_t = 32)]
    pub max_uploads: usize,
}

#[derive(Debug, Clone)]
pub struct Config {
    pub listen: SocketAddr,
    /// One log line per HTTP request (`--access-log`).
    pub access_log: bool,
    pub data_dir: PathBuf,
    pub secret: SecretSource,
    pub max_upload_bytes: u64,
    pub cache_bytes: usize,
    pub scrub_rate: u64,
    pub disk_reserve: u64,
    pub api_token: Option<String>,
    pub advertise: Option<String>,
    pub allowed_hosts: Vec<String>,
    pub io_threads: usize,
    pub cluster: crate::cluster::ClusterConfig,
    pub gc_period: std::time::Duration,
    pub scrub_period: std::time::Duration,
    pub received_grace: std::time::Duration,
    /// How long a shutdown waits for uploads in flight.
    pub shutdown_grace: std::time::Duration,
    /// `None`: the S3 endpoint is off.
    pub s3: Option<crate::s3::S3Config>,
    pub s3_root: S3Root,
    pub front: crate::limits::FrontLimits,
    pub upload_expiry: std::time::Duration,
    pub max_resumable_uploads: usize,
    pub upload_spool_bytes: u64,
}

/// Where the S3 root key comes from.
#[derive(Debug, Clone)]
pub enum S3Root {
    Given {
        access_key: String,
        secret: SecretSource,
    },
    /// Generated at the first start, written to this file.
    Generated(PathBuf),
}

#[derive(Debug, Clone)]
pub enum SecretSource {
    File(PathBuf),
    Value(String),
    /// DATA_DIR/secret, created on first start.
    Generated(PathBuf),
}

/// The shortest API token accepted: 16 random bytes written as hex.
pub const MIN_TOKEN_CHARS: usize = 32;

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("PORT must be a port number, got {0:?}")]
    BadPort(String),
    #[error(
        "listening on {0}, which is not loopback, needs --api-token (or DISTSTORE_API_TOKEN); pass --open-api to serve without one"
    )]
    TokenNeeded(SocketAddr),
    #[error(
        "--api-token must be at least {MIN_TOKEN_CHARS} characters (16 random bytes as hex); make one with `openssl rand -hex 32`"
    )]
    ShortToken,
    #[error("the secret must not be empty")]
    EmptySecret,
    #[error("--replication and --min-replicas must be at least 1, and --min-replicas at most --replication")]
    BadReplication,
    #[error("{0:?} is not a peer URL like http://host:port")]
    BadPeerUrl(String),
    #[error("--io-threads must be at least 1")]
    NoIoThreads,
    #[error("--max-connections and --max-uploads must be at least 1")]
    NoRoom,
    #[error("--max-head-size must be between 1KiB and 8KiB (the HTTP parser refuses longer heads)")]
    BadHeadSize,
    #[error("--header-timeout and --body-idle-timeout must be more than zero")]
    NoTimeout,
    #[error("--header-timeout must be at most 60s (the HTTP parser's own limit)")]
    LongHeaderTimeout,
    #[error(
        "--advertise {0} names no address a peer can dial; give this node's reachable address or host name"
    )]
    UnreachableAdvertise(String),
    #[error(
        "RUST_LOG: {0:?} is not a log level: give off, error, warn, info, debug or trace (one level for every module)"
    )]
    BadRustLog(String),
    #[error("--s3-listen must be an address like 127.0.0.1:3900, or off; got {0:?}")]
    BadS3Listen(String),
    #[error(
        "the S3 endpoint on {0}, which is not loopback, needs --api-token too (or --open-api), like the API"
    )]
    S3TokenNeeded(SocketAddr),
}

impl ServeArgs {
    fn front_limits(&self) -> Result<crate::limits::FrontLimits, ConfigError> {
        let max_connections = self.max_connections.unwrap_or_else(|| {
            // Each connection is a descriptor, and the database, peer links and the S3
            // listener need theirs: take a quarter of the limit at most.
            let files = open_file_limit().unwrap_or(4096);
            usize::try_from(files / 4).unwrap_or(usize::MAX).clamp(16, 1024)
        });
        if max_connections == 0 || self.max_uploads == 0 {
            return Err(ConfigError::NoRoom);
        }
        if !(1024..=8 * 1024).contains(&self.max_head_size) {
            return Err(ConfigError::BadHeadSize);
        }
        if self.header_timeout.is_zero() || self.body_idle_timeout.is_zero() {
            return Err(ConfigError::NoTimeout);
        }
        if self.header_timeout > MAX_HEADER_TIMEOUT {
            return Err(ConfigError::LongHeaderTimeout);
        }
        Ok(crate::limits::FrontLimits {
            max_connections,
            max_head_bytes: self.max_head_size as usize,
            header_timeout: self.header_timeout,
            body_idle_timeout: self.body_idle_timeout,
            max_uploads: self.max_uploads,
        })
    }

    /// The log level: `--log-level`, else `RUST_LOG`, else `info`.
    pub fn log_level(&self) -> Result<log::LevelFilter, ConfigError> {
        if let Some(level) = self.log_level {
            return Ok(level);
        }
        match std::env::var("RUST_LOG") {
            Ok(text) if !text.trim().is_empty() => {
                text.trim().parse().map_err(|_| ConfigError::BadRustLog(text))
            }
            _ => Ok(log::LevelFilter::Info),
        }
    }

    pub fn validate(self) -> Result<Config, ConfigError> {
        let front = self.front_limits()?;
        let listen = match (self.listen, std::env::var("PORT")) {
            (Some(addr), _) => addr,
            (None, Ok(port)) => {
                let port: u16 = port.trim().parse().map_err(|_| ConfigError::BadPort(port.clone()))?;
                SocketAddr::from(([127, 0, 0, 1], port))
            }
            (None, Err(_)) => SocketAddr::from(([127, 0, 0, 1], 8080)),
        };
        // A token guards every file: one short enough to guess (or typed by hand) is refused.
        if self.api_token.as_deref().is_some_and(|t| t.chars().count() < MIN_TOKEN_CHARS) {
            return Err(ConfigError::ShortToken);
        }
        if !listen.ip().is_loopback() && self.api_token.is_none() && !self.open_api {
            return Err(ConfigError::TokenNeeded(listen));
        }
        let secret = match (self.secret_file, self.secret) {
            (Some(path), _) => SecretSource::File(path),
            (None, Some(value)) if value.is_empty() => return Err(ConfigError::EmptySecret),
            (None, Some(value)) => SecretSource::Value(value),
            (None, None) => SecretSource::Generated(self.data_dir.join("secret")),
        };
        let min_replicas = self.min_replicas.unwrap_or(self.replication);
        if self.replication == 0 || min_replicas == 0 || min_replicas > self.replication {
            return Err(ConfigError::BadReplication);
        }
        let normalize = |u: &str| -> Result<String, ConfigError> {
            let u = u.trim().trim_end_matches('/');
            match url::Url::parse(u) {
                Ok(parsed) if parsed.scheme() == "http" && parsed.host_str().is_some() => Ok(u.to_owned()),
                _ => Err(ConfigError::BadPeerUrl(u.to_owned())),
            }
        };
        let seeds = self
            .peers
            .iter()
            .filter(|p| !p.trim().is_empty())
            .map(|p| normalize(p))
            .collect::<Result<_, _>>()?;
        let advertise = self.advertise.as_deref().map(normalize).transpose()?;
        if let Some(url) = advertise.as_ref().filter(|u| crate::cluster::unspecified_host(u)) {
            return Err(ConfigError::UnreachableAdvertise(url.clone()));
        }
        let s3 = match self.s3_listen.trim() {
            "off" => None,
            text => {
                let listen = parse_listen(text).map_err(|_| ConfigError::BadS3Listen(text.to_owned()))?;
                // S3 requests are signed, but a public endpoint on a node whose API is open
                // is a mistake the operator should make on purpose.
                if !listen.ip().is_loopback() && self.api_token.is_none() && !self.open_api {
                    return Err(ConfigError::S3TokenNeeded(listen));
                }
                Some(crate::s3::S3Config {
                    listen,
                    domain: self.s3_domain.clone(),
                    region: self.s3_region.clone(),
                    multipart_max_age: self.s3_multipart_max_age,
                })
            }
        };
        let s3_root =
            match (self.s3_access_key.clone(), self.s3_secret_key_file.clone(), self.s3_secret_key.clone()) {
                (Some(access_key), Some(file), _) => {
                    S3Root::Given { access_key, secret: SecretSource::File(file) }
                }
                (Some(access_key), None, Some(value)) => {
                    S3Root::Given { access_key, secret: SecretSource::Value(value) }
                }
                _ => S3Root::Generated(self.data_dir.join("s3-root-key")),
            };
        let defaults = crate::cluster::Timing::default();
        let timing = crate::cluster::Timing {
            settle: self.settle.unwrap_or(defaults.settle),
            sync_period: self.sync_period.unwrap_or(defaults.sync_period),
            down_out_after: self.down_out_after,
        };
        // Measured on 2 cores running three nodes: one network thread per node instead of two
        // cut context switches by 60% and a cluster upload's CPU by 5%; small requests kept
        // their rate.
        let io_threads = match self.io_threads {
            Some(0) => return Err(ConfigError::NoIoThreads),
            Some(n) => n,
            None => std::thread::available_parallelism().map_or(1, |n| (n.get() / 2).max(1)),
        };
        Ok(Config {
            front,
            access_log: self.access_log,
            advertise,
            allowed_hosts: self
                .allowed_hosts
                .iter()
                .map(|h| h.trim().to_owned())
                .filter(|h| !h.is_empty())
                .collect(),
            cluster: crate::cluster::ClusterConfig {
                seeds,
                replication: self.replication,
                min_replicas,
                repair_rate: self.repair_rate,
                timing,
            },
            gc_period: self.gc_period.unwrap_or(crate::node::GC_PERIOD),
            scrub_period: self.scrub_period.unwrap_or(crate::node::SCRUB_PERIOD),
            received_grace: self.received_grace.unwrap_or(crate::storage::RECEIVED_GRACE),
            shutdown_grace: self.shutdown_grace,
            s3,
            s3_root,
            listen,
            data_dir: self.data_dir,
            secret,
            max_upload_bytes: self.max_upload_size,
            cache_bytes: usize::try_from(self.cache_size).unwrap_or(usize::MAX),
            scrub_rate: self.scrub_rate,
            disk_reserve: self.disk_reserve,
            api_token: self.api_token,
            io_threads,
            upload_expiry: self.upload_expiry,
            max_resumable_uploads: self.max_resumable_uploads,
            upload_spool_bytes: self.upload_spool_size,
        })
    }
}

impl SecretSource {
    /// Reads the secret, generating DATA_DIR/secret (mode 0600) on first start.
    pub fn load(&self) -> std::io::Result<Vec<u8>> {
        use std::io::{Error, ErrorKind};
        let bytes = match self {
            SecretSource::Value(v) => v.clone().into_bytes(),
            SecretSource::File(path) => std::fs::read(path)
                .map_err(|e| Error::new(e.kind(), format!("reading secret file {}: {e}", path.display())))?,
            SecretSource::Generated(path) => match std::fs::read(path) {
                Ok(bytes) => bytes,
                Err(e) if e.kind() == ErrorKind::NotFound => {
                    let mut raw = [0u8; 32];
                    getrandom::fill(&mut raw).map_err(|e| Error::other(e.to_string()))?;
                    let text = format!("{}\n", hex::encode(raw));
                    write_private(path, text.as_bytes())?;
                    log::info!("generated a new secret in {}", path.display());
                    text.into_bytes()
                }
                Err(e) => return Err(e),
            },
        };
        // A trailing newline from `echo > file` is not part of the secret.
        let trimmed = bytes.trim_ascii_end().to_vec();
        if trimmed.is_empty() {
            return Err(Error::new(ErrorKind::InvalidData, "the secret is empty"));
        }
        Ok(trimmed)
    }
}

/// async-h1 gives up on a head after 60 s whatever the node asks.
const MAX_HEADER_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(60);

/// The soft limit on open files (RLIMIT_NOFILE), when known.
fn open_file_limit() -> Option<u64> {
    let mut limit = libc::rlimit { rlim_cur: 0, rlim_max: 0 };
    // SAFETY: getrlimit writes into the struct we own.
    let ok = unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) } == 0;
    (ok && limit.rlim_cur != libc::RLIM_INFINITY).then_some(limit.rlim_cur)
}

/// A listen address: `IP:PORT`, or `HOST:PORT` resolved now (an IPv4 address first, as
/// `localhost` means 127.0.0.1 to most clients).
pub fn parse_listen(text: &str) -> Result<SocketAddr, String> {
    use std::net::ToSocketAddrs;
    let text = text.trim();
    if let Ok(addr) = text.parse() {
        return Ok(addr);
    }
    let bad =
        |why: String| format!("{text:?} is not an address like 127.0.0.1:8080 or localhost:8080: {why}");
    if !text.rsplit_once(':').is_some_and(|(host, port)| !host.is_empty() && port.parse::<u16>().is_ok()) {
        return Err(bad("give HOST:PORT".into()));
    }
    let addrs: Vec<SocketAddr> = text.to_socket_addrs().map_err(|e| bad(e.to_string()))?.collect();
    addrs
        .iter()
        .find(|a| a.is_ipv4())
        .or(addrs.first())
        .copied()
        .ok_or_else(|| bad("the name has no address".into()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn min_replicas_defaults_to_the_replication_factor() {
        assert_eq!(serve(&["--replication", "3"]).unwrap().cluster.min_replicas, 3);
        assert_eq!(serve(&["--replication", "3", "--min-replicas", "1"]).unwrap().cluster.min_replicas, 1);
        assert!(serve(&["--replication", "2", "--min-replicas", "3"]).is_err());
    }

    #[test]
    fn an_unspecified_advertise_address_is_refused() {
        let err = serve(&["--advertise", "http://0.0.0.0:8080"]).unwrap_err();
        assert!(err.contains("--advertise"), "{err}");
        assert!(serve(&["--advertise", "http://10.0.0.1:8080"]).is_ok());
    }

    fn serve(args: &[&str]) -> Result<Config, String> {
        let cli = Cli::try_parse_from(std::iter::once("diststore").chain(args.iter().copied()))
            .map_err(|e| e.to_string())?;
        cli.serve.validate().map_err(|e| e.to_string())
    }

    #[test]
    fn front_bounds_have_defaults_and_refuse_what_cannot_work() {
        let front = serve(&[]).unwrap().front;
        assert!((16..=1024).contains(&front.max_connections));
        assert_eq!((front.max_head_bytes, front.max_uploads), (8 * 1024, 32));
        let front = serve(&["--max-connections", "64", "--max-head-size", "4KiB", "--header-timeout", "2s"])
            .unwrap()
            .front;
        assert_eq!((front.max_connections, front.max_head_bytes), (64, 4096));
        assert_eq!(front.header_timeout, std::time::Duration::from_secs(2));
        // async-h1 refuses heads past 8 KiB whatever this says.
        assert!(serve(&["--max-head-size", "64KiB"]).unwrap_err().contains("--max-head-size"));
        assert!(serve(&["--max-uploads", "0"]).is_err());
        assert!(serve(&["--body-idle-timeout", "0s"]).is_err());
        assert!(serve(&["--header-timeout", "2m"]).is_err());
    }

    #[test]
    fn io_threads_default_to_half_the_cpus_and_refuse_zero() {
        let cpus = std::thread::available_parallelism().map_or(1, |n| n.get());
        assert_eq!(serve(&[]).unwrap().io_threads, (cpus / 2).max(1));
        assert_eq!(serve(&["--io-threads", "3"]).unwrap().io_threads, 3);
        assert_eq!(serve(&["--io-threads", "0"]).unwrap_err(), "--io-threads must be at least 1");
    }
}
