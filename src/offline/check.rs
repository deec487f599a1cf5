//! `diststore check`: verifies a stopped node's database. Every stored chunk is read,
//! decrypted, authenticated and re-hashed (on several threads: that is the bulk of the work);
//! every manifest and name record must decode and agree with each other; every live file must
//! be readable in full from this database; and the counters the writer keeps must match what
//! is stored. Exit status 0 only when all of that holds.

use std::collections::{HashMap, HashSet};
use std::time::Instant;

use serde::Serialize;

use super::{EXIT_CANNOT_RUN, EXIT_OK, EXIT_PROBLEMS, OfflineError, Opened, parallel};
use crate::config::CheckArgs;
use crate::content::{ChunkId, FileId, Manifest};
use crate::crypto::TAG_LEN;
use crate::storage::{HIDDEN_PREFIX, Stats};
use crate::units::human_bytes;

#[derive(Debug, Default, Serialize)]
pub struct CheckReport {
    pub database: String,
    /// Live names, and deleted ones (tombstones).
    pub files: u64,
    pub deleted: u64,
    pub manifests: u64,
    pub chunks: u64,
    /// Sealed bytes verified.
    pub chunk_bytes: u64,
    pub seconds: f64,
    pub damaged_chunks: Vec<Problem>,
    pub damaged_manifests: Vec<Problem>,
    pub damaged_names: Vec<Problem>,
    /// Live files that cannot be read in full from this database, each with the first reason.
    pub unreadable_files: Vec<Problem>,
    /// Live files some of whose chunks this node does not hold (a cluster node holds only its
    /// share; with --allow-missing these are not problems).
    pub incomplete_files: Vec<Problem>,
    /// Counters or use counts that disagree with what is stored.
    pub inconsistencies: Vec<String>,
    pub ok: bool,
}

#[derive(Debug, Serialize)]
pub struct Problem {
    /// A file name, or a chunk or manifest id.
    pub what: String,
    pub reason: String,
}

/// Runs the check and prints its report; returns the exit status.
pub fn run(args: &CheckArgs) -> i32 {
    let json = args.offline.json;
    match super::open(&args.offline).and_then(|opened| check(&opened, args.allow_missing)) {
        Ok(report) => {
            if json {
                println!("{}", serde_json::to_string_pretty(&report).unwrap_or_default());
            } else {
                print_text(&report);
            }
            if report.ok { EXIT_OK } else { EXIT_PROBLEMS }
        }
        Err(e) => {
            if json {
                println!("{}", serde_json::json!({ "ok": false, "error": e.to_string() }));
            }
            eprintln!("diststore check: {e}");
            EXIT_CANNOT_RUN
        }
    }
}

pub fn check(opened: &Opened, allow_missing: bool) -> Result<CheckReport, OfflineError> {
    let started = Instant::now();
    let snapshot = &opened.snapshot;
    let mut report = CheckReport { database: opened.path.display().to_string(), ..Default::default() };

    // Chunks: the bulk of the work, spread over the threads.
    let index = snapshot.chunk_index()?;
    let verdicts = parallel(opened, &index, |reader, (id, len)| match reader.sealed(id) {
        Ok(Some(sealed)) if sealed.len() != *len as usize => {
            Some(format!("{} sealed bytes stored, the index says {len}", sealed.len()))
        }
        Ok(Some(sealed)) => opened.keys.verify_chunk(id, &sealed).err().map(|e| e.to_string()),
        Ok(None) => Some("listed in the index but has no stored bytes".into()),
        Err(e) => Some(e.to_string()),
    })?;
    let stored: HashMap<ChunkId, u32> = index.iter().copied().collect();
    let mut damaged: HashMap<ChunkId, String> = HashMap::new();
    for ((id, len), verdict) in index.iter().zip(verdicts) {
        report.chunks += 1;
        report.chunk_bytes += u64::from(*len);
        if let Some(reason) = verdict {
            report.damaged_chunks.push(Problem { what: id.to_string(), reason: reason.clone() });
            damaged.insert(*id, reason);
        }
    }

    // Manifests.
    let mut manifests: HashMap<FileId, Manifest> = HashMap::new();
    let mut bad_manifests: HashMap<FileId, String> = HashMap::new();
    for (id, manifest) in snapshot.manifests()? {
        report.manifests += 1;
        match manifest {
            Ok(m) => {
                manifests.insert(id, m);
            }
            Err(e) => {
                report.damaged_manifests.push(Problem { what: id.to_string(), reason: e.to_string() });
                bad_manifests.insert(id, e.to_string());
            }
        }
    }
    for (id, m) in &manifests {
        // A stored chunk's sealed length is its plaintext length plus the tag; a manifest that
        // says otherwise was damaged (or the chunk was).
        if let Some(c) = m
            .chunks
            .iter()
            .find(|c| stored.get(&c.id).is_some_and(|l| *l as usize != c.len as usize + TAG_LEN))
        {
            let reason = format!("says chunk {} has {} bytes, which is not what is stored", c.id, c.len);
            report.damaged_manifests.push(Problem { what: id.to_string(), reason: reason.clone() });
            bad_manifests.insert(*id, reason);
        }
    }

    // Names, and whether each live file reads in full.
    let mut expected = Stats { chunks: report.chunks, stored_bytes: report.chunk_bytes, ..Stats::default() };
    let mut file_users: HashMap<FileId, u32> = HashMap::new();
    for (name, record) in snapshot.names()? {
        let record = match record {
            Ok(r) => r,
            Err(e) => {
                report.damaged_names.push(Problem { what: name.clone(), reason: e.to_string() });
                report
                    .unreadable_files
                    .push(Problem { what: name, reason: "its name record is damaged".into() });
                continue;
            }
        };
        let Some(file) = record.file_id() else {
            report.deleted += 1;
            continue;
        };
        *file_users.entry(file).or_default() += 1;
        let hidden = name.starts_with(HIDDEN_PREFIX);
        if !hidden {
            report.files += 1;
            expected.files += 1;
            expected.logical_bytes += record.size;
        }
        let problem = if let Some(reason) = bad_manifests.get(&file) {
            Some(format!("its manifest {file} is damaged: {reason}"))
        } else if let Some(m) = manifests.get(&file) {
            if m.size != record.size {
                Some(format!("its record says {} bytes, its manifest {}", record.size, m.size))
            } else {
                let distinct = m.distinct_chunks();
                if let Some((c, reason)) = distinct.iter().find_map(|c| damaged.get(&c.id).map(|r| (c, r))) {
                    Some(format!("chunk {} is damaged: {reason}", c.id))
                } else if let Some(c) = distinct.iter().find(|c| !stored.contains_key(&c.id)) {
                    let missing =
                        Problem { what: name.clone(), reason: format!("chunk {} is not stored here", c.id) };
                    if allow_missing {
                        report.incomplete_files.push(missing);
                        None
                    } else {
                        Some(missing.reason)
                    }
                } else {
                    None
                }
            }
        } else {
            Some(format!("its manifest {file} is missing"))
        };
        if let Some(reason) = problem {
            report.unreadable_files.push(Problem { what: name, reason });
        }
    }

    // Use counts and totals, recomputed from what is stored.
    let (chunk_refs, file_refs) = snapshot.refcounts()?;
    let mut chunk_users: HashMap<ChunkId, u32> = HashMap::new();
    for m in manifests.values() {
        expected.unique_bytes += m.size;
        for c in m.distinct_chunks() {
            *chunk_users.entry(c.id).or_default() += 1;
        }
    }
    if bad_manifests.is_empty() {
        let ids: HashSet<ChunkId> = chunk_users.keys().chain(chunk_refs.keys()).copied().collect();
        let mut wrong: Vec<String> = ids
            .into_iter()
            .filter_map(|id| {
                let (want, have) =
                    (chunk_users.get(&id).copied().unwrap_or(0), chunk_refs.get(&id).copied().unwrap_or(0));
                (want != have)
                    .then(|| format!("chunk {id} is used by {want} manifests, its count says {have}"))
            })
            .collect();
        let ids: HashSet<FileId> = file_users.keys().chain(file_refs.keys()).copied().collect();
        wrong.extend(ids.into_iter().filter_map(|id| {
            let (want, have) =
                (file_users.get(&id).copied().unwrap_or(0), file_refs.get(&id).copied().unwrap_or(0));
            (want != have).then(|| format!("file {id} has {want} names, its count says {have}"))
        }));
        wrong.sort();
        report.inconsistencies.extend(wrong);
        let have = snapshot.stats()?;
        if have != expected {
            report
                .inconsistencies
                .push(format!("the stored totals are {have:?}, what is stored adds up to {expected:?}"));
        }
    }

    report.unreadable_files.sort_by(|a, b| a.what.cmp(&b.what));
    report.seconds = started.elapsed().as_secs_f64();
    report.ok = report.damaged_chunks.is_empty()
        && report.damaged_manifests.is_empty()
        && report.damaged_names.is_empty()
        && report.unreadable_files.is_empty()
        && report.inconsistencies.is_empty();
    Ok(report)
}

fn print_text(r: &CheckReport) {
    let rate = r.chunk_bytes as f64 / r.seconds.max(1e-9);
    println!("checked {} in {:.1} s", r.database, r.seconds);
    println!("  files:     {} ({} deleted names kept as tombstones)", r.files, r.deleted);
    println!("  manifests: {} ({} damaged)", r.manifests, r.damaged_manifests.len());
    println!(
        "  chunks:    {} ({}, verified at {}/s), {} damaged",
        r.chunks,
        human_bytes(r.chunk_bytes),
        human_bytes(rate as u64),
        r.damaged_chunks.len()
    );
    let section = |title: &str, items: &[Problem]| {
        if !items.is_empty() {
            println!("{title} ({}):", items.len());
            for p in items {
                println!("  {}: {}", p.what, p.reason);
            }
        }
    };
    section("damaged chunks", &r.damaged_chunks);
    section("damaged manifests", &r.damaged_manifests);
    section("damaged name records", &r.damaged_names);
    section("files that cannot be read in full", &r.unreadable_files);
    section("files only partly held here (other nodes hold the rest)", &r.incomplete_files);
    if !r.inconsistencies.is_empty() {
        println!("inconsistent counts ({}):", r.inconsistencies.len());
        for i in &r.inconsistencies {
            println!("  {i}");
        }
    }
    println!("{}", if r.ok { "all well" } else { "PROBLEMS FOUND" });
}
