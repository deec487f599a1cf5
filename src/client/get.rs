//! `diststore get`: a file, or every file under a prefix. Each download goes to
//! `DEST.part` first (resumed with a `Range` when one is there), is checked against the id
//! (its SHA-256) and only then renamed to its name, so no partial or wrong file ever carries
//! the final name. Names that would land outside DEST (`..`, absolute paths) are refused.

use std::fs::{File, OpenOptions};
use std::io::{Read, Write};
use std::path::{Component, Path, PathBuf};
use std::process::ExitCode;

use serde_json::json;
use sha2::{Digest, Sha256};

use super::progress::{Bars, Meter};
use super::{Api, ClientError, GetArgs, Output, each_parallel, list_all};
use crate::units::human_bytes as bytes;

struct Item {
    name: String,
    target: PathBuf,
    size: u64,
    id: String,
}

/// `rel` (a stored name below the prefix) as a path inside `dest`, or an error when it
/// would not stay inside.
pub fn inside(dest: &Path, rel: &str) -> Result<PathBuf, ClientError> {
    let refuse = || {
        ClientError::Local(format!("refusing {rel:?}: the name would be written outside {}", dest.display()))
    };
    if rel.is_empty() || rel.starts_with('/') || rel.contains('\0') || rel.contains('\\') {
        return Err(refuse());
    }
    let mut out = dest.to_path_buf();
    for part in rel.split('/') {
        let mut components = Path::new(part).components();
        match (components.next(), components.next()) {
            (Some(Component::Normal(c)), None) if c == part => out.push(c),
            _ => return Err(refuse()),
        }
    }
    Ok(out)
}

pub fn run(args: GetArgs) -> Result<ExitCode, ClientError> {
    let api = Api::new(&args.opts)?;
    let out = Output::of(&args.opts);
    let mut items = Vec::new();
    if args.name.is_empty() || args.name.ends_with('/') {
        let dest = args.dest.clone().unwrap_or_else(|| PathBuf::from("."));
        let files = list_all(&api, &args.name)?;
        if files.is_empty() {
            return Err(ClientError::NotFound(args.name.clone()));
        }
        for f in files {
            let name = f["name"].as_str().unwrap_or_default().to_owned();
            let rel = name.strip_prefix(args.name.as_str()).unwrap_or(&name);
            items.push(Item {
                target: inside(&dest, rel)?,
                size: f["size"].as_u64().unwrap_or(0),
                id: f["id"].as_str().unwrap_or_default().to_owned(),
                name,
            });
        }
    } else {
        let head = api.head_file(&args.name)?.ok_or_else(|| ClientError::NotFound(args.name.clone()))?;
        let base = args.name.rsplit('/').next().unwrap_or_default();
        let target = match &args.dest {
            None => inside(Path::new("."), base)?,
            Some(d) if d.is_dir() || d.as_os_str().to_string_lossy().ends_with('/') => inside(d, base)?,
            Some(d) => d.clone(),
        };
        items.push(Item { name: args.name.clone(), target, size: head.size, id: head.id });
    }
    let bars = Bars::new(out, items.iter().map(|i| i.size).sum(), "get");
    let failed = each_parallel(
        &items,
        args.jobs,
        |item| item.name.clone(),
        |item| {
            let how = if download(&api, &args, &bars, item)? { "resumed" } else { "fetched" };
            if out.json {
                let line = json!({ "name": item.name, "path": item.target, "id": item.id, "size": item.size, "result": how });
                bars.line(&line.to_string());
            } else {
                bars.line(&format!(
                    "{how:<9} {}  {}  -> {}",
                    item.name,
                    bytes(item.size),
                    item.target.display()
                ));
            }
            Ok(())
        },
    );
    bars.finish();
    Ok(if failed? { ExitCode::FAILURE } else { ExitCode::SUCCESS })
}

/// Downloads one file; returns whether it went on from an earlier `.part`.
fn download(api: &Api, args: &GetArgs, bars: &Bars, item: &Item) -> Result<bool, ClientError> {
    let local = |e| ClientError::local(item.target.display(), e);
    if let Some(dir) = item.target.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir).map_err(local)?;
    }
    let mut part_name = item.target.as_os_str().to_owned();
    part_name.push(".part");
    let part = PathBuf::from(part_name);
    let mut have = std::fs::metadata(&part).map(|m| m.len()).unwrap_or(0);
    if have > item.size {
        have = 0;
    }
    // The bytes already here count towards the id.
    let mut hasher = Sha256::new();
    if have > 0 {
        let mut f = File::open(&part).map_err(local)?;
        let mut buf = vec![0u8; 1 << 20];
        let mut left = have;
        while left > 0 {
            let n = f.read(&mut buf[..left.min(1 << 20) as usize]).map_err(local)?;
            if n == 0 {
                break;
            }
            hasher.update(&buf[..n]);
            left -= n as u64;
        }
    }
    let mut res = api.get_file(&item.name, have, &item.id)?;
    let etag = res
        .headers()
        .get("ETag")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .trim_matches('"')
        .to_owned();
    // Anything but the rest of the same content starts over.
    if have > 0 && (res.status() != 206 || etag != item.id) {
        have = 0;
        hasher = Sha256::new();
        if res.status() == 206 {
            res = api.get_file(&item.name, 0, &item.id)?;
        }
    }
    // The writer's modification time, when the node keeps one (`put` sends it).
    let mtime = res
        .headers()
        .get("X-DistStore-Mtime")
        .and_then(|v| v.to_str().ok()?.trim().parse::<f64>().ok())
        .filter(|t| t.is_finite() && *t >= 0.0)
        .map(|t| std::time::UNIX_EPOCH + std::time::Duration::from_secs_f64(t));
    let file = OpenOptions::new()
        .create(true)
        .write(true)
        .truncate(have == 0)
        .append(have > 0)
        .open(&part)
        .map_err(local)?;
    let bar = bars.file(&item.name, item.size);
    bar.inc(have);
    bars.advance(have);
    struct Hashing<'h, W> {
        inner: W,
        hasher: &'h mut Sha256,
    }
    impl<W: Write> Write for Hashing<'_, W> {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            let n = self.inner.write(buf)?;
            self.hasher.update(&buf[..n]);
            Ok(n)
        }
        fn flush(&mut self) -> std::io::Result<()> {
            self.inner.flush()
        }
    }
    let mut sink =
        Meter::new(Hashing { inner: file, hasher: &mut hasher }, bar.clone(), bars, args.limit_rate);
    let mut body = res.body_mut().with_config().limit(u64::MAX).reader();
    let copied = std::io::copy(&mut body, &mut sink);
    let Hashing { inner: file, .. } = sink.inner;
    copied.map_err(|e| ClientError::Unreachable {
        url: api.base().to_owned(),
        reason: format!("the download broke off: {e}"),
    })?;
    if let Some(t) = mtime {
        file.set_modified(t).map_err(local)?;
    }
    file.sync_all().map_err(local)?;
    bar.finish_and_clear();
    let got = hex::encode(hasher.finalize());
    if got != item.id {
        // Wrong bytes must not be resumed from either.
        let _ = std::fs::remove_file(&part);
        return Err(ClientError::Mismatch { name: item.name.clone(), got, want: item.id.clone() });
    }
    std::fs::rename(&part, &item.target).map_err(local)?;
    Ok(have > 0)
}

#[cfg(test)]
mod tests {
    use super::inside;
    use std::path::Path;

    #[test]
    fn names_stay_inside_dest() {
        let d = Path::new("/tmp/d");
        assert_eq!(inside(d, "a/b c/ü.txt").unwrap(), Path::new("/tmp/d/a/b c/ü.txt"));
        for bad in ["../x", "a/../../x", "/etc/passwd", "a//b", "a/./b", "", "..", "a/"] {
            assert!(inside(d, bad).is_err(), "{bad}");
        }
    }
}
