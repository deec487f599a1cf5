//! `diststore put`: files and directory trees, several at once. A file whose SHA-256 the node
//! already has under its name is skipped; large files go through a resumable (tus) upload
//! whose URL is remembered, so an interrupted run, or a node restarted meanwhile, goes on
//! where it stopped; every stored id is checked against the local SHA-256.

use std::fs::File;
use std::io::{Read, Seek, SeekFrom};
use std::path::{Component, Path, PathBuf};
use std::process::ExitCode;
use std::time::{Duration, Instant};

use serde_json::json;
use sha2::{Digest, Sha256};

use super::progress::{Bars, Meter};
use super::state::UploadState;
use super::{Api, ClientError, Output, PutArgs, each_parallel};
use crate::units::human_bytes as bytes;

/// How long a resumable upload keeps trying while the node is unreachable or busy (a restart).
const RETRY_FOR: Duration = Duration::from_secs(60);
/// How long to wait for a node that has every byte to store the file (it reads the spooled
/// file through its upload pipeline, which for a large file outlasts one answer's timeout).
const FINISH_WAIT: Duration = Duration::from_secs(3600);

struct Item {
    path: PathBuf,
    name: String,
    size: u64,
}

pub fn run(args: PutArgs) -> Result<ExitCode, ClientError> {
    let api = Api::new(&args.opts)?;
    let out = Output::of(&args.opts);
    // `/backup` means the folder `backup/`: a name starting with `/` could not be fetched
    // back into a directory.
    let mut prefix = args.prefix.trim_start_matches('/').to_owned();
    if !prefix.is_empty() && !prefix.ends_with('/') {
        prefix.push('/');
    }
    let mut items = Vec::new();
    for path in &args.paths {
        collect(path, &prefix, &mut items)?;
    }
    let mut names: Vec<&str> = items.iter().map(|i| i.name.as_str()).collect();
    names.sort_unstable();
    if let Some(pair) = names.windows(2).find(|w| w[0] == w[1]) {
        return Err(ClientError::Local(format!("two of the files would both be stored as {:?}", pair[0])));
    }
    let total: u64 = items.iter().map(|i| i.size).sum();
    let bars = Bars::new(out, total, "put");
    let state = UploadState::open();
    let failed = each_parallel(
        &items,
        args.jobs,
        |item| item.path.display().to_string(),
        |item| {
            let (id, how) = put_one(&api, &args, &state, &bars, item)?;
            if out.json {
                bars.line(
                    &json!({ "name": item.name, "id": id, "size": item.size, "result": how }).to_string(),
                );
            } else {
                bars.line(&format!("{how:<9} {}  {}  {id}", item.name, bytes(item.size)));
            }
            Ok(())
        },
    );
    bars.finish();
    Ok(if failed? { ExitCode::FAILURE } else { ExitCode::SUCCESS })
}

/// The files under `path` with their names: a file as `prefix` + its file name, a directory's
/// files as `prefix` + the directory's name + their path in it (`.` and `/` add no name).
fn collect(path: &Path, prefix: &str, items: &mut Vec<Item>) -> Result<(), ClientError> {
    let meta = std::fs::metadata(path).map_err(|e| ClientError::local(path.display(), e))?;
    let base = match path.components().next_back() {
        Some(Component::Normal(n)) => Some(
            n.to_str()
                .ok_or_else(|| ClientError::Local(format!("{}: the name is not UTF-8", path.display())))?
                .to_owned(),
        ),
        _ => None,
    };
    if meta.is_file() {
        let name = base.ok_or_else(|| ClientError::Local(format!("{}: not a file name", path.display())))?;
        items.push(Item { path: path.to_owned(), name: format!("{prefix}{name}"), size: meta.len() });
        return Ok(());
    }
    if !meta.is_dir() {
        return Err(ClientError::Local(format!("{}: not a file or directory", path.display())));
    }
    let root = match base {
        Some(b) => format!("{prefix}{b}/"),
        None => prefix.to_owned(),
    };
    let mut stack = vec![(path.to_owned(), root)];
    while let Some((dir, name)) = stack.pop() {
        let mut entries: Vec<_> = std::fs::read_dir(&dir)
            .map_err(|e| ClientError::local(dir.display(), e))?
            .collect::<Result<_, _>>()
            .map_err(|e| ClientError::local(dir.display(), e))?;
        entries.sort_by_key(|e| e.file_name());
        for entry in entries {
            let p = entry.path();
            let file_name = entry
                .file_name()
                .into_string()
                .map_err(|_| ClientError::Local(format!("{}: the name is not UTF-8", p.display())))?;
            let kind = entry.file_type().map_err(|e| ClientError::local(p.display(), e))?;
            // Links to directories are not followed (they can loop); links to files are.
            if kind.is_dir() {
                stack.push((p, format!("{name}{file_name}/")));
            } else if let Ok(m) = std::fs::metadata(&p)
                && m.is_file()
            {
                items.push(Item { path: p, name: format!("{name}{file_name}"), size: m.len() });
            }
        }
    }
    Ok(())
}

fn sha256_of(path: &Path) -> Result<String, ClientError> {
    let mut file = File::open(path).map_err(|e| ClientError::local(path.display(), e))?;
    let mut hasher = Sha256::new();
    let mut buf = vec![0u8; 1 << 20];
    loop {
        let n = file.read(&mut buf).map_err(|e| ClientError::local(path.display(), e))?;
        if n == 0 {
            return Ok(hex::encode(hasher.finalize()));
        }
        hasher.update(&buf[..n]);
    }
}

fn mtime_of(path: &Path) -> Option<f64> {
    let modified = std::fs::metadata(path).ok()?.modified().ok()?;
    Some(modified.duration_since(std::time::UNIX_EPOCH).ok()?.as_secs_f64())
}

/// Uploads one file; returns its id and what happened (`stored`, `unchanged`, `resumed`).
fn put_one(
    api: &Api,
    args: &PutArgs,
    state: &UploadState,
    bars: &Bars,
    item: &Item,
) -> Result<(String, &'static str), ClientError> {
    let want = sha256_of(&item.path)?;
    if let Some(head) = api.head_file(&item.name)?
        && head.id == want
    {
        bars.advance(item.size);
        return Ok((want, "unchanged"));
    }
    let mtime = mtime_of(&item.path);
    let bar = bars.file(&item.name, item.size);
    let (got, how) = if item.size >= args.resumable_from {
        resumable(api, args, state, bars, item, &want, mtime, &bar)?
    } else {
        let file = File::open(&item.path).map_err(|e| ClientError::local(item.path.display(), e))?;
        let mut body = Meter::new(file, bar.clone(), bars, args.limit_rate);
        (api.put_file(&item.name, &mut body, mtime)?, "stored")
    };
    bar.finish_and_clear();
    if got != want {
        return Err(ClientError::Mismatch { name: item.name.clone(), got, want });
    }
    Ok((got, how))
}

#[allow(clippy::too_many_arguments)]
fn resumable(
    api: &Api,
    args: &PutArgs,
    state: &UploadState,
    bars: &Bars,
    item: &Item,
    want: &str,
    mtime: Option<f64>,
    bar: &indicatif::ProgressBar,
) -> Result<(String, &'static str), ClientError> {
    let node = api.base();
    let mut how = "stored";
    let mut url = None;
    let mut offset = 0;
    if let Some(known) = state.get(node, &item.name, want) {
        match api.tus_state(&known)? {
            Some(s) if s.id.is_some() => {
                state.set(node, &item.name, want, None);
                bars.advance(item.size);
                return Ok((s.id.unwrap_or_default(), "resumed"));
            }
            Some(s) => {
                offset = s.offset;
                url = Some(known);
                how = "resumed";
            }
            None => state.set(node, &item.name, want, None),
        }
    }
    let url = match url {
        Some(u) => u,
        None => {
            let u = api.tus_create(&item.name, item.size, mtime)?;
            // Remembered before any byte is sent, so a kill at any point can resume.
            state.set(node, &item.name, want, Some(&u));
            u
        }
    };
    let mut file = File::open(&item.path).map_err(|e| ClientError::local(item.path.display(), e))?;
    let mut counted = 0u64;
    let mut failing_since: Option<Instant> = None;
    let mut finishing_since: Option<Instant> = None;
    loop {
        // What the node holds already counts as done.
        if offset > counted {
            bar.inc(offset - counted);
            bars.advance(offset - counted);
            counted = offset;
        }
        file.seek(SeekFrom::Start(offset)).map_err(|e| ClientError::local(item.path.display(), e))?;
        let sent_before = bar.position();
        let mut body = Meter::new((&mut file).take(item.size - offset), bar.clone(), bars, args.limit_rate);
        let answer = api.tus_patch(&url, offset, &mut body);
        // Bytes sent count from the node's answer on, not from what left this process.
        let sent = bar.position() - sent_before;
        bar.set_position(sent_before);
        bars.rewind(sent);
        match answer {
            Ok(Some(s)) if s.id.is_some() => {
                state.set(node, &item.name, want, None);
                bars.advance(item.size - counted);
                bar.set_position(item.size);
                return Ok((s.id.unwrap_or_default(), how));
            }
            Ok(Some(s)) if s.offset > offset => {
                offset = s.offset;
                failing_since = None;
                continue;
            }
            Ok(_) | Err(ClientError::Unreachable { .. }) => {
                let since = *failing_since.get_or_insert_with(Instant::now);
                if since.elapsed() > RETRY_FOR {
                    answer?;
                    return Err(ClientError::Refused(format!(
                        "{}: the upload makes no progress; run the command again to resume it",
                        item.name
                    )));
                }
                std::thread::sleep(Duration::from_millis(500));
                match api.tus_state(&url) {
                    Ok(Some(s)) if s.id.is_some() => {
                        state.set(node, &item.name, want, None);
                        bars.advance(item.size - counted);
                        return Ok((s.id.unwrap_or_default(), how));
                    }
                    Ok(Some(s)) => {
                        let finishing = s.offset == item.size
                            && finishing_since.get_or_insert_with(Instant::now).elapsed() < FINISH_WAIT;
                        if s.offset > offset || finishing {
                            failing_since = None;
                        }
                        offset = s.offset;
                        how = "resumed";
                    }
                    Ok(None) => {
                        state.set(node, &item.name, want, None);
                        return Err(ClientError::Refused(format!(
                            "{}: the node dropped the upload; run the command again to start over",
                            item.name
                        )));
                    }
                    Err(ClientError::Unreachable { .. }) => {}
                    Err(e) => return Err(e),
                }
            }
            Err(e) => return Err(e),
        }
    }
}
