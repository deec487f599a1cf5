//! `diststore put|get|ls|rm|mv|cp|share|status|health|node`: a command-line client of a node's
//! native API.
//!
//! Synchronous on purpose: a CLI moves a few files at once, so plain threads and a blocking
//! HTTP client (ureq, rustls) serve it without a second async runtime. Everything the node
//! says goes through [`api::Api`], which turns statuses into one-line [`ClientError`]s; `run`
//! prints those and picks the exit code, so no command panics or prints a trace.

mod api;
mod get;
mod node;
mod progress;
mod put;
mod state;

use std::io::IsTerminal;
use std::process::ExitCode;

use clap::{Args, Subcommand};
use serde_json::json;

pub use api::Api;
pub use node::NodeArgs;

/// Options every client command takes.
#[derive(Args, Debug, Clone)]
pub struct Opts {
    /// The node to talk to.
    #[arg(long, env = "DISTSTORE_NODE", value_name = "URL", default_value = "http://127.0.0.1:8080")]
    pub node: String,

    /// The node's API token (sent as `Authorization: Bearer`, never in a URL).
    #[arg(long, env = "DISTSTORE_API_TOKEN", hide_env_values = true, value_name = "TOKEN")]
    pub api_token: Option<String>,

    /// Print only errors.
    #[arg(long, short)]
    pub quiet: bool,

    /// Print results as JSON (one object per line for transfers), for scripts.
    #[arg(long)]
    pub json: bool,
}

#[derive(Subcommand, Debug)]
pub enum Command {
    /// Upload files and directories (resumable; unchanged files are skipped).
    Put(PutArgs),
    /// Download a file, or everything under PREFIX/ (resumable, verified).
    Get(GetArgs),
    /// List files and folders.
    Ls(LsArgs),
    /// Delete files, or everything under a prefix with -r.
    Rm(RmArgs),
    /// Rename a file, or every file under SRC/ (no bytes move).
    Mv(MoveArgs),
    /// Copy a file, or every file under SRC/ (no bytes move).
    Cp(MoveArgs),
    /// Print a read-only link to a file that expires.
    Share(ShareArgs),
    /// Show the node's status and its peers.
    Status(PlainArgs),
    /// Exit 0 when the node is healthy (for container health checks).
    Health(PlainArgs),
    /// The cluster's members: list, drain, remove.
    Node(NodeArgs),
}

#[derive(Args, Debug)]
pub struct PutArgs {
    #[command(flatten)]
    pub opts: Opts,
    /// Files or directories. A directory is uploaded with its own name as the first folder
    /// (`put photos` stores `photos/...`; `put .` stores the contents).
    #[arg(required = true, value_name = "PATH")]
    pub paths: Vec<std::path::PathBuf>,
    /// Folder to store under, e.g. `backup/2026/`.
    #[arg(long, default_value = "")]
    pub prefix: String,
    /// Files uploaded at once.
    #[arg(long, short, default_value_t = 4)]
    pub jobs: usize,
    /// Cap the upload rate per file, e.g. 10MiB (bytes per second).
    #[arg(long, value_name = "SIZE", value_parser = crate::units::parse_size)]
    pub limit_rate: Option<u64>,
    /// Files at least this large go through a resumable upload.
    #[arg(long, value_name = "SIZE", default_value = "8MiB", value_parser = crate::units::parse_size)]
    pub resumable_from: u64,
}

#[derive(Args, Debug)]
pub struct GetArgs {
    #[command(flatten)]
    pub opts: Opts,
    /// A file name, or a prefix ending in `/` for everything under it.
    pub name: String,
    /// Where to write: a file name, or a directory (default: the current one).
    pub dest: Option<std::path::PathBuf>,
    /// Files downloaded at once.
    #[arg(long, short, default_value_t = 4)]
    pub jobs: usize,
    /// Cap the download rate per file, e.g. 10MiB (bytes per second).
    #[arg(long, value_name = "SIZE", value_parser = crate::units::parse_size)]
    pub limit_rate: Option<u64>,
}

#[derive(Args, Debug)]
pub struct LsArgs {
    #[command(flatten)]
    pub opts: Opts,
    /// Folder or prefix to list (default: the top).
    #[arg(default_value = "")]
    pub prefix: String,
    /// Long format: size, modification time, id.
    #[arg(short)]
    pub long: bool,
    /// Every file below, instead of folders.
    #[arg(short)]
    pub recursive: bool,
}

#[derive(Args, Debug)]
pub struct RmArgs {
    #[command(flatten)]
    pub opts: Opts,
    /// Names, or with -r prefixes ending in `/`.
    #[arg(required = true)]
    pub names: Vec<String>,
    /// Delete every file under each PREFIX/.
    #[arg(short)]
    pub recursive: bool,
}

#[derive(Args, Debug)]
pub struct MoveArgs {
    #[command(flatten)]
    pub opts: Opts,
    pub src: String,
    pub dst: String,
    /// Fail instead of replacing an existing destination.
    #[arg(long, short = 'n')]
    pub no_clobber: bool,
}

#[derive(Args, Debug)]
pub struct ShareArgs {
    #[command(flatten)]
    pub opts: Opts,
    pub name: String,
    /// How long the link works, e.g. 30m, 1h, 7d.
    #[arg(long, default_value = "1h", value_parser = crate::units::parse_duration)]
    pub expires: std::time::Duration,
}

#[derive(Args, Debug)]
pub struct PlainArgs {
    #[command(flatten)]
    pub opts: Opts,
}

/// Why a command failed, said in one line.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    #[error("cannot reach the node at {url}: {reason}")]
    Unreachable { url: String, reason: String },
    #[error("the node refused the API token: give the right one with --api-token or DISTSTORE_API_TOKEN")]
    Token,
    #[error("no such file: {0}")]
    NotFound(String),
    #[error("the node is out of space (507): {0}")]
    Full(String),
    #[error("{0}")]
    Refused(String),
    #[error("{0}")]
    Local(String),
    #[error("{name}: the node stored id {got}, but the file's SHA-256 is {want}")]
    Mismatch { name: String, got: String, want: String },
}

impl ClientError {
    fn local(what: impl std::fmt::Display, e: std::io::Error) -> Self {
        ClientError::Local(format!("{what}: {e}"))
    }
}

/// How a command reports: bars on a terminal, lines when piped, JSON for scripts.
#[derive(Debug, Clone, Copy)]
pub struct Output {
    pub quiet: bool,
    pub json: bool,
    pub terminal: bool,
}

impl Output {
    fn of(opts: &Opts) -> Self {
        Output { quiet: opts.quiet, json: opts.json, terminal: std::io::stdout().is_terminal() }
    }

    /// Whether to draw progress bars.
    fn bars(&self) -> bool {
        self.terminal && !self.quiet && !self.json
    }
}

/// Runs a client command; errors are printed here, as one line each.
pub fn run(command: Command) -> ExitCode {
    match dispatch(command) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("diststore: {e}");
            ExitCode::FAILURE
        }
    }
}

fn dispatch(command: Command) -> Result<ExitCode, ClientError> {
    match command {
        Command::Put(args) => put::run(args),
        Command::Get(args) => get::run(args),
        Command::Ls(args) => ls(args),
        Command::Rm(args) => rm(args),
        Command::Mv(args) => relocate(args, "move"),
        Command::Cp(args) => relocate(args, "copy"),
        Command::Share(args) => share(args),
        Command::Status(args) => status(args),
        Command::Health(args) => health(args),
        Command::Node(args) => node::run(args),
    }
}

/// Runs `work` on every item, `jobs` at a time. An item's failure is printed (with its
/// label) and the others go on; a failure that dooms them all (an unreachable node, a refused
/// token) stops the run and is returned, to be said once. Returns whether any item failed.
fn each_parallel<T: Sync>(
    items: &[T],
    jobs: usize,
    label: impl Fn(&T) -> String + Sync,
    work: impl Fn(&T) -> Result<(), ClientError> + Sync,
) -> Result<bool, ClientError> {
    use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
    let next = AtomicUsize::new(0);
    let failed = AtomicBool::new(false);
    let fatal = std::sync::Mutex::new(None);
    let stopped = || fatal.lock().unwrap_or_else(|e| e.into_inner()).is_some();
    std::thread::scope(|s| {
        for _ in 0..jobs.clamp(1, 64).min(items.len().max(1)) {
            s.spawn(|| {
                while !stopped() {
                    let Some(item) = items.get(next.fetch_add(1, Ordering::Relaxed)) else { break };
                    match work(item) {
                        Ok(()) => {}
                        Err(e @ (ClientError::Unreachable { .. } | ClientError::Token)) => {
                            fatal.lock().unwrap_or_else(|e| e.into_inner()).get_or_insert(e);
                        }
                        Err(e) => {
                            failed.store(true, Ordering::Relaxed);
                            eprintln!("diststore: {}: {e}", label(item));
                        }
                    }
                }
            });
        }
    });
    match fatal.into_inner().unwrap_or_else(|e| e.into_inner()) {
        Some(e) => Err(e),
        None => Ok(failed.load(Ordering::Relaxed)),
    }
}

/// Every file under `prefix` (all pages).
fn list_all(api: &Api, prefix: &str) -> Result<Vec<serde_json::Value>, ClientError> {
    Ok(list(api, prefix, false)?.0)
}

/// The files under `prefix`, and with `fold` the folders the node grouped by `delimiter=/`
/// (a node that does not fold returns every file; the caller folds those).
fn list(api: &Api, prefix: &str, fold: bool) -> Result<(Vec<serde_json::Value>, Vec<String>), ClientError> {
    let (mut files, mut folders) = (Vec::new(), Vec::new());
    let mut after: Option<String> = None;
    loop {
        let mut query = vec![("prefix", prefix.to_owned()), ("limit", "1000".to_owned())];
        if fold {
            query.push(("delimiter", "/".to_owned()));
        }
        if let Some(a) = after.take() {
            query.push(("after", a));
        }
        let page = api.get_json("/api/v1/files", &query)?;
        files.extend(page["files"].as_array().cloned().unwrap_or_default());
        folders.extend(
            page["folders"].as_array().into_iter().flatten().filter_map(|f| f.as_str().map(str::to_owned)),
        );
        match page["next"].as_str() {
            Some(next) if !next.is_empty() => after = Some(next.to_owned()),
            _ => return Ok((files, folders)),
        }
    }
}

/// A prefix naming a folder: `docs` is the folder `docs/` unless a file has that very name.
fn folder_of(api: &Api, prefix: &str) -> Result<Option<String>, ClientError> {
    if prefix.is_empty() || prefix.ends_with('/') {
        return Ok(Some(prefix.to_owned()));
    }
    Ok(if api.head_file(prefix)?.is_some() { None } else { Some(format!("{prefix}/")) })
}

fn ls(args: LsArgs) -> Result<ExitCode, ClientError> {
    let api = Api::new(&args.opts)?;
    let out = Output::of(&args.opts);
    let folder = folder_of(&api, &args.prefix)?;
    let (files, mut folders) = match &folder {
        None => {
            let (files, _) = list(&api, &args.prefix, false)?;
            (files.into_iter().filter(|f| f["name"] == args.prefix).collect(), Vec::new())
        }
        Some(prefix) => list(&api, prefix, !args.recursive)?,
    };
    let prefix = folder.unwrap_or_default();
    // Folders as `ls` shows them: the next level below the prefix, each once. Also folded
    // here, so the listing is the same whether or not the node folds by `delimiter`.
    let mut shown = Vec::new();
    for file in files {
        let name = file["name"].as_str().unwrap_or_default();
        let rest = name.strip_prefix(prefix.as_str()).unwrap_or(name);
        match rest.find('/') {
            Some(i) if !args.recursive => {
                folders.push(format!("{prefix}{}", &rest[..=i]));
            }
            _ => shown.push(file),
        }
    }
    folders.sort();
    folders.dedup();
    if out.json {
        println!("{}", json!({ "folders": folders, "files": shown }));
        return Ok(ExitCode::SUCCESS);
    }
    for folder in &folders {
        if args.long {
            println!("{:>12}  {:<20}  {folder}", "-", "-");
        } else {
            println!("{folder}");
        }
    }
    for file in &shown {
        let name = file["name"].as_str().unwrap_or_default();
        if args.long {
            let size = file["size"].as_u64().unwrap_or(0);
            let when = file["mtime"].as_str().or(file["modified"].as_str()).unwrap_or("-");
            println!("{size:>12}  {:<20}  {name}", when.get(..19).unwrap_or(when));
        } else {
            println!("{name}");
        }
    }
    Ok(ExitCode::SUCCESS)
}

fn rm(args: RmArgs) -> Result<ExitCode, ClientError> {
    let api = Api::new(&args.opts)?;
    let out = Output::of(&args.opts);
    let mut failed = false;
    let mut names = Vec::new();
    for given in &args.names {
        if args.recursive {
            let Some(prefix) = folder_of(&api, given)? else {
                names.push(given.clone());
                continue;
            };
            let under = list_all(&api, &prefix)?;
            if under.is_empty() {
                eprintln!("diststore: {}", ClientError::NotFound(prefix));
                failed = true;
            }
            names.extend(under.iter().filter_map(|f| f["name"].as_str().map(str::to_owned)));
        } else {
            names.push(given.clone());
        }
    }
    for name in names {
        match api.delete_file(&name) {
            Ok(()) if out.json => println!("{}", json!({ "deleted": name })),
            Ok(()) if !out.quiet => println!("deleted {name}"),
            Ok(()) => {}
            // A missing name is reported; the others are still deleted.
            Err(e @ ClientError::NotFound(_)) => {
                eprintln!("diststore: {e}");
                failed = true;
            }
            Err(e) => return Err(e),
        }
    }
    Ok(if failed { ExitCode::FAILURE } else { ExitCode::SUCCESS })
}

/// `mv` and `cp`: one metadata-only request.
fn relocate(args: MoveArgs, verb: &str) -> Result<ExitCode, ClientError> {
    let api = Api::new(&args.opts)?;
    let out = Output::of(&args.opts);
    let mut dst = args.dst.clone();
    if args.src.ends_with('/') && !dst.ends_with('/') && !dst.is_empty() {
        dst.push('/');
    }
    let body = json!({ "from": args.src, "to": dst, "overwrite": !args.no_clobber });
    let answer = api.post_json(&format!("/api/v1/{verb}"), &body, &args.src)?;
    let count = answer[if verb == "move" { "moved" } else { "copied" }].as_u64().unwrap_or(0);
    if out.json {
        println!("{answer}");
    } else if !out.quiet {
        let done = if verb == "move" { "moved" } else { "copied" };
        println!("{done} {count} file{} to {dst}", if count == 1 { "" } else { "s" });
    }
    Ok(ExitCode::SUCCESS)
}

fn share(args: ShareArgs) -> Result<ExitCode, ClientError> {
    let api = Api::new(&args.opts)?;
    let body = json!({ "name": args.name, "expires_in": args.expires.as_secs().max(1) });
    let answer = api.post_json("/api/v1/shares", &body, &args.name)?;
    if args.opts.json {
        println!("{answer}");
    } else {
        // The link is the point, even with --quiet.
        println!("{}", answer["url"].as_str().unwrap_or_default());
    }
    Ok(ExitCode::SUCCESS)
}

fn status(args: PlainArgs) -> Result<ExitCode, ClientError> {
    let api = Api::new(&args.opts)?;
    let s = api.get_json("/api/v1/status", &[])?;
    if args.opts.json {
        println!("{s}");
        return Ok(ExitCode::SUCCESS);
    }
    let n = |v: &serde_json::Value| v.as_u64().unwrap_or(0);
    println!(
        "node     {} ({}, version {})",
        s["node_id"].as_str().unwrap_or("?"),
        s["url"].as_str().unwrap_or("?"),
        s["version"].as_str().unwrap_or("?")
    );
    println!(
        "files    {} ({} logical, {} stored)",
        n(&s["files"]),
        crate::units::human_bytes(n(&s["logical_bytes"])),
        crate::units::human_bytes(n(&s["stored_bytes"]))
    );
    let peers = s["peers"].as_array().cloned().unwrap_or_default();
    println!("peers    {}", peers.len());
    for p in peers {
        println!("  {:<5} {}", p["state"].as_str().unwrap_or("?"), p["url"].as_str().unwrap_or("?"));
    }
    Ok(ExitCode::SUCCESS)
}

fn health(args: PlainArgs) -> Result<ExitCode, ClientError> {
    let api = Api::new(&args.opts)?;
    let (ok, text) = api.health()?;
    if !args.opts.quiet {
        if args.opts.json {
            println!("{}", json!({ "ok": ok, "message": text }));
        } else {
            println!("{text}");
        }
    }
    Ok(if ok { ExitCode::SUCCESS } else { ExitCode::FAILURE })
}
