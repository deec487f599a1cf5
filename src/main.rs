use anyhow::Context;
use clap::Parser;

use diststore::config::{Cli, Command};
use diststore::crypto::Secret;
use diststore::node::{Node, NodeConfig};
use diststore::storage::Store;
use diststore::{http, runtime};

const DB_FILE: &str = "diststore.redb";

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    let args = match cli.command {
        Some(Command::Serve(args)) => args,
        None => cli.serve,
    };
    femme::with_level(femme::LevelFilter::Info);
    let config = args.validate()?;

    std::fs::create_dir_all(&config.data_dir)
        .with_context(|| format!("creating data directory {}", config.data_dir.display()))?;
    let secret = config.secret.load().context("loading the cluster secret")?;
    let keys = Secret::new(secret).keys();
    let db_path = config.data_dir.join(DB_FILE);
    let store = Store::open(&db_path, config.cache_bytes)
        .with_context(|| format!("opening database {}", db_path.display()))?;
    let node = Node::new(
        store,
        keys,
        NodeConfig {
            max_upload_bytes: config.max_upload_bytes,
            db_path,
        },
    );
    log::info!(
        "node {} with data in {}",
        node.node_id(),
        config.data_dir.display()
    );

    let (_stop_gc, gc_shutdown) = async_channel::bounded::<()>(1);
    let gc_node = node.clone();
    runtime::spawn(async move { gc_node.collector().run(gc_shutdown).await });

    runtime::block_on(http::serve(node, &config))
}
