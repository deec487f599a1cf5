//! DistStore: a distributed, content-addressed, encrypted file store.
//!
//! Module map (dependencies point up the list only):
//! - [`content`]: ids, chunker, manifests, names. Pure.
//! - [`crypto`]: key derivation, chunk sealing. Pure.
//! - [`private_file`]: owner-only files written whole (secrets, keys). A leaf.
//! - [`process`]: the process's memory, CPU time, threads and fds from `/proc/self`. A leaf.
//! - [`time`]: wall-clock milliseconds and date formatting. A leaf.
//! - [`units`]: sizes and durations as typed on the command line. Pure.
//! - [`runtime`]: the only module that names the async runtime.
//! - [`limits`]: gates on connections and uploads, and the counters of what they refused.
//! - [`storage`]: the redb owner: tables, records, the batching writer, migrations.
//! - [`clock`]: hybrid logical clock for version stamps.
//! - [`events`]: change notifications for live views.
//! - [`health`]: which background loops still run, for `/health`.
//! - [`cluster`]: peer links, membership, placement, replication, anti-entropy, repair.
//! - [`node`]: use cases (put, get, delete, list, status, GC).
//! - [`http`]: the tide app: routes, error mapping, the embedded UI.
//! - [`s3`]: the S3 endpoint (s3s on its own tokio runtime), beside `http`.
//! - [`logging`]: femme at one level behind pumps, so a closed stdout
//!   never stops the node.
//! - [`offline`]: `check` and `export` over a stopped node's database.
//! - [`client`]: the `diststore put|get|ls|...` commands, an HTTP client of the native API.
//! - [`config`]: command line and environment → validated config.

pub mod client;
pub mod clock;
pub mod cluster;
pub mod config;
pub mod content;
pub mod crypto;
pub mod events;
pub mod health;
pub mod http;
pub mod limits;
pub mod logging;
pub mod node;
pub mod offline;
pub mod private_file;
pub mod process;
pub mod runtime;
pub mod s3;
pub mod storage;
pub mod time;
pub mod units;
