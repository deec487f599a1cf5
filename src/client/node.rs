//! `diststore node list|drain ID|remove ID`: the cluster's members and their lifecycle,
//! through `/api/v1/nodes`.

use std::process::ExitCode;

use clap::{Args, Subcommand};

use super::{Api, ClientError, Opts};
use crate::units::human_bytes;

#[derive(Args, Debug)]
pub struct NodeArgs {
    #[command(subcommand)]
    pub op: NodeOp,
}

#[derive(Subcommand, Debug)]
pub enum NodeOp {
    /// Every member: id, address, state (up, down since, out, draining, removed) and space.
    List(NodeListArgs),
    /// Move a live member's chunks to the others; it leaves once none of them needs it.
    Drain(NodeIdArgs),
    /// Drop a dead member now and re-replicate its share at once, without waiting for
    /// --down-out-after.
    Remove(NodeIdArgs),
}

#[derive(Args, Debug)]
pub struct NodeListArgs {
    #[command(flatten)]
    pub opts: Opts,
}

#[derive(Args, Debug)]
pub struct NodeIdArgs {
    #[command(flatten)]
    pub opts: Opts,
    /// The member's node id (32 hex digits, as `node list` shows it).
    pub id: String,
}

pub fn run(args: NodeArgs) -> Result<ExitCode, ClientError> {
    match args.op {
        NodeOp::List(a) => list(&a.opts),
        NodeOp::Drain(a) => operate(&a, "drain"),
        NodeOp::Remove(a) => operate(&a, "remove"),
    }
}

fn list(opts: &Opts) -> Result<ExitCode, ClientError> {
    let api = Api::new(opts)?;
    let answer = api.get_json("/api/v1/nodes", &[])?;
    if opts.json {
        println!("{answer}");
        return Ok(ExitCode::SUCCESS);
    }
    let nodes = answer["nodes"].as_array().cloned().unwrap_or_default();
    println!("{:<32}  {:<24}  {:<34}  {:>8}  SPACE (free of total)", "ID", "ADDRESS", "STATE", "CHUNKS");
    for n in nodes {
        let state = n["state"].as_str().unwrap_or("?");
        let state = match (state, n["since"].as_str()) {
            ("down" | "draining" | "removed", Some(since)) => format!("{state} since {since}"),
            _ => state.to_owned(),
        };
        let chunks = n["chunks"].as_u64().map_or("-".into(), |c| c.to_string());
        let space = match (n["disk_free_bytes"].as_u64(), n["disk_total_bytes"].as_u64()) {
            (Some(free), Some(total)) => format!("{} of {}", human_bytes(free), human_bytes(total)),
            _ => "-".into(),
        };
        let me = if n["me"] == true { " *" } else { "" };
        println!(
            "{:<32}  {:<24}  {:<34}  {chunks:>8}  {space}{me}",
            n["node_id"].as_str().unwrap_or("?"),
            n["url"].as_str().unwrap_or(""),
            state
        );
    }
    Ok(ExitCode::SUCCESS)
}

fn operate(args: &NodeIdArgs, op: &str) -> Result<ExitCode, ClientError> {
    let api = Api::new(&args.opts)?;
    // Checked here too, so a typo never reaches a URL path.
    if args.id.len() != 32 || !args.id.bytes().all(|b| b.is_ascii_hexdigit()) {
        return Err(ClientError::Local(format!("{:?} is not a node id (32 hex digits)", args.id)));
    }
    let answer = api
        .post_json(&format!("/api/v1/nodes/{}/{op}", args.id), &serde_json::json!({}), "node")
        .map_err(|e| match e {
            ClientError::NotFound(_) => {
                ClientError::Refused(format!("no member {} in this cluster", args.id))
            }
            e => e,
        })?;
    if args.opts.json {
        println!("{answer}");
    } else if !args.opts.quiet {
        let next = if op == "drain" {
            "its chunks move to the others; `diststore node list` shows it removed when done"
        } else {
            "the others re-replicate its share now; `diststore status` shows repair's progress"
        };
        println!("node {} is {}: {next}", args.id, answer["state"].as_str().unwrap_or(op));
    }
    Ok(ExitCode::SUCCESS)
}
