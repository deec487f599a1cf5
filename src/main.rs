use anyhow::Context;
use clap::Parser;

use diststore::config::{Cli, Command, S3Root};
use diststore::crypto::Secret;
use diststore::node::{self, Node, NodeConfig};
use diststore::storage::Store;
use diststore::{http, runtime};

use diststore::offline::DB_FILE;

/// glibc gives each thread that allocates its own arena and rarely returns freed arena memory;
/// with a blocking pool of many threads moving MiB-sized buffers, that grows the process far
/// past what it uses. Two arenas match the cores this is tuned for.
fn limit_malloc_arenas() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: mallopt only adjusts allocator tuning; called before any other thread starts.
    unsafe {
        libc::mallopt(libc::M_ARENA_MAX, 2);
    }
}

fn main() -> anyhow::Result<()> {
    limit_malloc_arenas();
    let result = run();
    // Whatever ends the node, its last log lines and its error reach the real output.
    diststore::logging::finish();
    result
}

/// Exits with `code` once what was printed has reached the real output.
fn exit_with(code: i32) -> ! {
    diststore::logging::finish();
    std::process::exit(code)
}

fn run() -> anyhow::Result<()> {
    let cli = Cli::parse();
    let args = match cli.command {
        Some(Command::Serve(args)) => *args,
        Some(Command::Compact(args)) => {
            let path = args.data_dir.join(DB_FILE);
            let (before, after) =
                Store::compact_offline(&path).with_context(|| format!("compacting {}", path.display()))?;
            println!("compacted {}: {before} -> {after} bytes", path.display());
            return Ok(());
        }
        None => cli.serve,
        // The offline tools work on a stopped node's data directory; they print their own
        // report and choose the exit status.
        Some(Command::Check(args)) => exit_with(diststore::offline::check::run(&args)),
        Some(Command::Export(args)) => exit_with(diststore::offline::export::run(&args)),
        Some(Command::Client(command)) => std::process::exit(match diststore::client::run(command) {
            code if code == std::process::ExitCode::SUCCESS => 0,
            _ => 1,
        }),
    };
    // Only a node logs, behind the pumps (the client writes to the terminal itself, and
    // looks at whether its stdout is one).
    let level = args.log_level()?;
    diststore::logging::start(level);
    let config = args.validate()?;
    runtime::configure(config.io_threads);

    std::fs::create_dir_all(&config.data_dir)
        .with_context(|| format!("creating data directory {}", config.data_dir.display()))?;
    {
        use std::os::unix::fs::PermissionsExt;
        // The data directory is the node's alone (it holds the secret and the database).
        std::fs::set_permissions(&config.data_dir, std::fs::Permissions::from_mode(0o700))
            .with_context(|| format!("restricting data directory {}", config.data_dir.display()))?;
    }
    let secret = config.secret.load().context("loading the cluster secret")?;
    let keys = Secret::new(secret).keys();
    let db_path = config.data_dir.join(DB_FILE);
    let store = Store::open(&db_path, config.cache_bytes)
        .with_context(|| format!("opening database {}", db_path.display()))?;
    runtime::block_on(node::check_data_key(&store, &keys))
        .with_context(|| format!("opening database {}", db_path.display()))?;
    store.set_received_grace(config.received_grace);
    store.set_disk_reserve(config.disk_reserve);
    let node_config = NodeConfig {
        max_upload_bytes: config.max_upload_bytes,
        scrub_rate: config.scrub_rate,
        gc_period: config.gc_period,
        scrub_period: config.scrub_period,
        limits: diststore::limits::Limits::new(config.front),
    };
    let node = Node::new(store, keys, node_config, config.cluster.clone());
    log::info!("node {} with data in {}", node.node_id(), config.data_dir.display());

    // Background loops stop when this sender is dropped, after the drain below.
    let (stop, shutdown) = async_channel::bounded::<()>(1);
    let gc_node = node.clone();
    let gc_shutdown = shutdown.clone();
    let changes = node.events().subscribe();
    let running = node.running("gc");
    runtime::spawn(async move {
        gc_node.collector().run(changes, gc_shutdown).await;
        drop(running);
    });
    let scrub_node = node.clone();
    let scrub_shutdown = shutdown.clone();
    let running = node.running("scrub");
    runtime::spawn(async move {
        scrub_node.scrubber().run(scrub_shutdown).await;
        drop(running);
    });

    // SIGTERM or Ctrl-C: stop accepting and taking uploads, which ends `serve` below and
    // starts the drain. A second signal stops at once (a kill -9 loses nothing acknowledged
    // either; it only costs a database check at the next start).
    let mut signals =
        signal_hook::iterator::Signals::new([signal_hook::consts::SIGTERM, signal_hook::consts::SIGINT])
            .context("installing signal handlers")?;
    let stopping = node.clone();
    let grace = config.shutdown_grace;
    std::thread::spawn(move || {
        let mut signals = signals.forever();
        if let Some(signal) = signals.next() {
            log::info!("signal {signal}: shutting down; uploads in flight have {grace:?} to finish");
            stopping.begin_shutdown();
        }
        if let Some(signal) = signals.next() {
            log::warn!("signal {signal} again: stopping now");
            diststore::logging::finish();
            std::process::exit(1);
        }
    });

    if let Some(s3) = config.s3.clone() {
        let bound = diststore::s3::start(node.clone(), s3).context("starting the S3 endpoint")?;
        // Tests and scripts read this line to learn the port when listening on port 0.
        println!("diststore s3 listening on http://{bound}");
        let given = match &config.s3_root {
            S3Root::Given { access_key, secret } => {
                let secret = secret.load().context("loading the S3 root secret key")?;
                Some((
                    access_key.clone(),
                    String::from_utf8(secret).context("the S3 secret key is not UTF-8")?,
                ))
            }
            S3Root::Generated(_) => None,
        };
        let file = match &config.s3_root {
            S3Root::Generated(path) => path.clone(),
            S3Root::Given { .. } => config.data_dir.join("s3-root-key"),
        };
        diststore::s3::ensure_root_key(node.clone(), given, file);
    }
    runtime::block_on(http::serve(node.clone(), &config, shutdown))?;

    // Shutting down: uploads in flight finish (up to the grace), every background loop stops
    // through its signal, and the database closes cleanly, so the next start needs no repair.
    let cut = runtime::block_on(node.drain_uploads(config.shutdown_grace));
    if cut > 0 {
        log::warn!("{cut} uploads did not finish within the grace; they are not kept");
    }
    drop(stop);
    let running = runtime::block_on(node.wait_loops_stopped(std::time::Duration::from_secs(10)));
    if running > 0 {
        log::warn!("{running} background loops still running; closing the database anyway");
    }
    runtime::block_on(node.shutdown()).context("closing the database")?;
    log::info!("stopped");
    Ok(())
}
