//! `diststore export PREFIX DEST`: writes the live files whose names start with PREFIX out of
//! a stopped node's database into DEST, each verified (every chunk opened and re-hashed, the
//! whole file hashed against its id) before it takes its final name. A file that fails is
//! skipped and listed; the others are written whole.
//!
//! What must stay true: nothing is written outside DEST (names are checked component by
//! component, and no symlink is followed on the way down), and no partial file is ever left
//! under a final name (each file is written to a temporary name beside it, fsynced, then
//! renamed).

use std::io::Write;
use std::path::{Component, Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant, UNIX_EPOCH};

use serde::Serialize;
use sha2::Digest;

use super::check::Problem;
use super::{EXIT_CANNOT_RUN, EXIT_OK, EXIT_PROBLEMS, OfflineError, Opened, parallel, read_chunk};
use crate::config::ExportArgs;
use crate::content::{FileId, Manifest};
use crate::storage::HIDDEN_PREFIX;
use crate::storage::snapshot::ChunkReader;
use crate::units::human_bytes;

#[derive(Debug, Default, Serialize)]
pub struct ExportReport {
    pub dest: String,
    pub exported: u64,
    pub bytes: u64,
    pub seconds: f64,
    /// Files not written, with why.
    pub skipped: Vec<Problem>,
}

pub fn run(args: &ExportArgs) -> i32 {
    let json = args.offline.json;
    match super::open(&args.offline).and_then(|opened| export(&opened, &args.prefix, &args.dest)) {
        Ok(report) => {
            if json {
                println!("{}", serde_json::to_string_pretty(&report).unwrap_or_default());
            } else {
                println!(
                    "exported {} files ({}) to {} in {:.1} s",
                    report.exported,
                    human_bytes(report.bytes),
                    report.dest,
                    report.seconds
                );
                if !report.skipped.is_empty() {
                    println!("skipped ({}):", report.skipped.len());
                    for p in &report.skipped {
                        println!("  {}: {}", p.what, p.reason);
                    }
                }
            }
            if report.skipped.is_empty() { EXIT_OK } else { EXIT_PROBLEMS }
        }
        Err(e) => {
            if json {
                println!("{}", serde_json::json!({ "ok": false, "error": e.to_string() }));
            }
            eprintln!("diststore export: {e}");
            EXIT_CANNOT_RUN
        }
    }
}

struct Job {
    name: String,
    manifest: Result<Manifest, String>,
    modified_ms: u64,
}

pub fn export(opened: &Opened, prefix: &str, dest: &Path) -> Result<ExportReport, OfflineError> {
    let started = Instant::now();
    std::fs::create_dir_all(dest)
        .map_err(|e| OfflineError::Io(format!("creating {}: {e}", dest.display())))?;
    let dest =
        dest.canonicalize().map_err(|e| OfflineError::Io(format!("resolving {}: {e}", dest.display())))?;
    // The node's own metadata (S3 keys, buckets) only when asked for by name.
    let hidden = !prefix.starts_with(HIDDEN_PREFIX);
    let manifests: std::collections::HashMap<FileId, Result<Manifest, String>> =
        opened.snapshot.manifests()?.into_iter().map(|(id, m)| (id, m.map_err(|e| e.to_string()))).collect();
    let mut jobs = Vec::new();
    let mut skipped = Vec::new();
    for (name, record) in opened.snapshot.names()? {
        if !name.starts_with(prefix) || (hidden && name.starts_with(HIDDEN_PREFIX)) {
            continue;
        }
        let record = match record {
            Ok(r) => r,
            Err(e) => {
                skipped.push(Problem { what: name, reason: format!("its name record is damaged: {e}") });
                continue;
            }
        };
        let Some(file) = record.file_id() else { continue };
        let manifest = match manifests.get(&file) {
            Some(Ok(m)) if m.size == record.size => Ok(m.clone()),
            Some(Ok(m)) => Err(format!("its record says {} bytes, its manifest {}", record.size, m.size)),
            Some(Err(e)) => Err(format!("its manifest is damaged: {e}")),
            None => Err(format!("its manifest {file} is missing")),
        };
        jobs.push(Job { name, manifest, modified_ms: record.modified_ms });
    }
    let bytes = AtomicU64::new(0);
    let results = parallel(opened, &jobs, |reader, job| {
        let manifest = job.manifest.as_ref().map_err(Clone::clone)?;
        let path = target_path(&dest, &job.name)?;
        write_file(opened, reader, manifest, &path, job.modified_ms)?;
        bytes.fetch_add(manifest.size, Ordering::Relaxed);
        Ok::<(), String>(())
    })?;
    let mut report = ExportReport { dest: dest.display().to_string(), ..Default::default() };
    for (job, result) in jobs.iter().zip(results) {
        match result {
            Ok(()) => report.exported += 1,
            Err(reason) => skipped.push(Problem { what: job.name.clone(), reason }),
        }
    }
    skipped.sort_by(|a, b| a.what.cmp(&b.what));
    report.skipped = skipped;
    report.bytes = bytes.into_inner();
    report.seconds = started.elapsed().as_secs_f64();
    Ok(report)
}

/// Where `name` goes under `dest`, creating the directories on the way. Names are the users'
/// strings: only plain components are accepted, and an existing symlink on the way is refused
/// rather than followed.
fn target_path(dest: &Path, name: &str) -> Result<PathBuf, String> {
    let parts: Vec<&str> = name.split('/').collect();
    let plain = |p: &&str| {
        !p.is_empty()
            && !p.contains('\0')
            && matches!(Path::new(p).components().collect::<Vec<_>>().as_slice(), [Component::Normal(_)])
    };
    if !parts.iter().all(plain) {
        return Err(
            "the name is not a plain relative path (empty, '.' or '..' parts), so it has no place under DEST"
                .into(),
        );
    }
    let mut dir = dest.to_path_buf();
    for part in &parts[..parts.len() - 1] {
        dir.push(part);
        match std::fs::symlink_metadata(&dir) {
            Ok(m) if m.is_dir() => {}
            Ok(_) => return Err(format!("{} exists and is not a directory", dir.display())),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => match std::fs::create_dir(&dir) {
                Ok(()) => {}
                // Another worker made it meanwhile.
                Err(e)
                    if e.kind() == std::io::ErrorKind::AlreadyExists && dir.is_dir() && !dir.is_symlink() => {
                }
                Err(e) => return Err(format!("creating {}: {e}", dir.display())),
            },
            Err(e) => return Err(format!("{}: {e}", dir.display())),
        }
    }
    let path = dir.join(parts[parts.len() - 1]);
    if std::fs::symlink_metadata(&path).is_ok_and(|m| m.is_dir()) {
        return Err(format!("{} is a directory (another name continues this one)", path.display()));
    }
    Ok(path)
}

/// Writes one file to a temporary name beside `path`, verified chunk by chunk and as a whole,
/// then renames it into place. On failure the temporary file is removed.
fn write_file(
    opened: &Opened,
    reader: &ChunkReader,
    manifest: &Manifest,
    path: &Path,
    modified_ms: u64,
) -> Result<(), String> {
    let base = path.file_name().map(|b| b.to_string_lossy().into_owned()).unwrap_or_default();
    let tmp = path.with_file_name(format!(".{base}.diststore-export-{}", std::process::id()));
    let result = (|| -> Result<(), String> {
        let _ = std::fs::remove_file(&tmp);
        let file = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(&tmp)
            .map_err(|e| format!("creating {}: {e}", tmp.display()))?;
        let mut out = std::io::BufWriter::with_capacity(1 << 20, file);
        let mut hasher = sha2::Sha256::new();
        for chunk in &manifest.chunks {
            let plain = read_chunk(reader, &opened.keys, &chunk.id)?;
            if plain.len() != chunk.len as usize {
                return Err(format!(
                    "chunk {} has {} bytes, the manifest says {}",
                    chunk.id,
                    plain.len(),
                    chunk.len
                ));
            }
            hasher.update(&plain);
            out.write_all(&plain).map_err(|e| format!("writing {}: {e}", tmp.display()))?;
        }
        if FileId::from_bytes(hasher.finalize().into()) != manifest.id {
            return Err("the file's bytes do not hash to its id (a damaged manifest)".into());
        }
        let file = out.into_inner().map_err(|e| format!("writing {}: {e}", tmp.display()))?;
        let _ = file.set_modified(UNIX_EPOCH + Duration::from_millis(modified_ms));
        file.sync_all().map_err(|e| format!("syncing {}: {e}", tmp.display()))?;
        std::fs::rename(&tmp, path).map_err(|e| format!("renaming into {}: {e}", path.display()))
    })();
    if result.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    result
}

#[cfg(test)]
mod tests {
    use super::target_path;

    /// Names an older node may hold (the node now refuses dot segments) never leave DEST.
    #[test]
    fn names_that_would_escape_have_no_place() {
        let dest = tempfile::tempdir().unwrap();
        for name in ["../escape", "a/../../escape", "/absolute", "a//b", "./x", "a/.", "x\0y"] {
            assert!(target_path(dest.path(), name).is_err(), "{name:?}");
        }
        assert_eq!(target_path(dest.path(), "ok/in.txt").unwrap(), dest.path().join("ok/in.txt"));
    }
}
