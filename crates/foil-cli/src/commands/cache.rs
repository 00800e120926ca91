//! `foil cache stats | verify | gc`: look after the embedding cache (and generation caches).

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use clap::{Args, Subcommand};
use foil::embedding_cache::admin;

#[derive(Debug, Args)]
pub struct CacheArgs {
    #[command(subcommand)]
    action: Action,
}

#[derive(Debug, Subcommand)]
enum Action {
    /// List the stores of the embedding cache: encoder, text kind, rows, chunks, bytes.
    Stats(Target),
    /// Check every chunk against its checksums, ids against vectors, duplicate texts and
    /// uncommitted tails. Exits 1 when something is wrong. Safe while other runs use the cache.
    Verify(Target),
    /// Drop damaged chunks, duplicates, uncommitted tails and stores of an older format, and
    /// rewrite each store compactly. Refused while another process uses the cache.
    Gc(Target),
}

#[derive(Debug, Args)]
struct Target {
    /// The embedding cache folder (default: $FOIL_CACHE/embeddings or ~/.cache/foil/embeddings).
    #[arg(long)]
    cache_dir: Option<PathBuf>,
    /// A generation cache file (`cache.jsonl` of `foil generate`) to act on instead; repeatable.
    #[arg(long)]
    generation: Vec<PathBuf>,
    /// Print JSON on stdout instead of a table.
    #[arg(long)]
    json: bool,
}

impl Target {
    fn root(&self) -> PathBuf {
        self.cache_dir
            .clone()
            .unwrap_or_else(foil::embedding_cache::default_cache_dir)
    }
}

pub fn run(args: CacheArgs) -> anyhow::Result<ExitCode> {
    match args.action {
        Action::Stats(t) => stats(&t),
        Action::Verify(t) => verify(&t),
        Action::Gc(t) => gc(&t),
    }
}

fn print_json(value: &impl serde::Serialize) -> anyhow::Result<()> {
    println!("{}", serde_json::to_string_pretty(value)?);
    Ok(())
}

fn stats(t: &Target) -> anyhow::Result<ExitCode> {
    if !t.generation.is_empty() {
        let checks = t
            .generation
            .iter()
            .map(|p| admin::verify_generation(p))
            .collect::<foil_core::Result<Vec<_>>>()?;
        if t.json {
            print_json(&checks)?;
        } else {
            for c in &checks {
                println!(
                    "{}: {} answers, {} lines, {} bytes",
                    c.path.display(),
                    c.answers,
                    c.lines,
                    c.bytes
                );
            }
        }
        return Ok(ExitCode::SUCCESS);
    }
    let root = t.root();
    let stores = admin::stats(&root).with_context(|| format!("cache {}", root.display()))?;
    if t.json {
        print_json(&stores)?;
        return Ok(ExitCode::SUCCESS);
    }
    println!(
        "{:<26} {:>9} {:>7} {:>5} {:>12}  encoder",
        "store", "rows", "chunks", "dim", "bytes"
    );
    for s in &stores {
        let encoder = match (&s.provenance, s.format_version) {
            (Some(p), Some(v)) if v >= 2 => short_encoder(p),
            (Some(p), Some(v)) => format!("{} (format {v}, no checksums)", short_encoder(p)),
            _ => "(no readable header)".into(),
        };
        println!(
            "{:<26} {:>9} {:>7} {:>5} {:>12}  {encoder}",
            s.key, s.rows, s.chunks, s.dim, s.bytes
        );
    }
    let rows: u64 = stores.iter().map(|s| s.rows).sum();
    let bytes: u64 = stores.iter().map(|s| s.bytes).sum();
    eprintln!(
        "cache stats: {} stores, {rows} rows, {bytes} bytes in {}",
        stores.len(),
        root.display()
    );
    Ok(ExitCode::SUCCESS)
}

/// `bert:weights=53aa…;…|kind=Passage` → `bert:weights=53aa51172d14… kind=Passage`.
/// The model part of an encoder's fingerprint, cut short, and the kind of text.
fn short_encoder(provenance: &foil::embedding_cache::Provenance) -> String {
    let fingerprint = &provenance.encoder;
    let head: String = fingerprint
        .split(';')
        .next()
        .unwrap_or(fingerprint)
        .chars()
        .take(32)
        .collect();
    format!("{head}… kind={:?}", provenance.kind)
}

fn verify(t: &Target) -> anyhow::Result<ExitCode> {
    let ok;
    if !t.generation.is_empty() {
        let checks = t
            .generation
            .iter()
            .map(|p| admin::verify_generation(p))
            .collect::<foil_core::Result<Vec<_>>>()?;
        ok = checks.iter().all(|c| c.is_ok());
        if t.json {
            print_json(&checks)?;
        } else {
            for c in &checks {
                println!(
                    "{}: {} — {} answers in {} lines, {} duplicate lines, {} invalid, {} without checksum, {} bytes after the last line",
                    c.path.display(),
                    if c.is_ok() { "ok" } else { "PROBLEMS" },
                    c.answers,
                    c.lines,
                    c.duplicate_lines,
                    c.invalid.len(),
                    c.unverified,
                    c.partial_bytes
                );
                for line in &c.invalid {
                    println!("  {line}");
                }
            }
        }
    } else {
        let root = t.root();
        let checks = admin::verify(&root).with_context(|| format!("cache {}", root.display()))?;
        ok = checks.iter().all(|c| c.is_ok());
        if t.json {
            print_json(&checks)?;
        } else {
            for c in &checks {
                println!(
                    "{}: {} — {} rows in {} chunks, {} damaged rows, {} duplicate rows, {} uncommitted bytes",
                    c.key,
                    if c.is_ok() { "ok" } else { "PROBLEMS" },
                    c.rows,
                    c.chunks,
                    c.damaged_rows,
                    c.duplicate_rows,
                    c.uncommitted_bytes
                );
                for line in c.damaged.iter().chain(&c.problems) {
                    println!("  {line}");
                }
            }
            eprintln!(
                "cache verify: {} stores, {} with problems{}",
                checks.len(),
                checks.iter().filter(|c| !c.is_ok()).count(),
                if ok {
                    ""
                } else {
                    " (`foil cache gc` repairs them)"
                }
            );
        }
    }
    Ok(if ok {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    })
}

fn gc(t: &Target) -> anyhow::Result<ExitCode> {
    if !t.generation.is_empty() {
        let done = t
            .generation
            .iter()
            .map(|p| admin::gc_generation(p))
            .collect::<foil_core::Result<Vec<_>>>()?;
        if t.json {
            print_json(&done)?;
        } else {
            for d in &done {
                println!(
                    "{}: {} lines → {} answers, {} → {} bytes",
                    d.path.display(),
                    d.lines_before,
                    d.answers,
                    d.bytes_before,
                    d.bytes_after
                );
            }
        }
        return Ok(ExitCode::SUCCESS);
    }
    let root = t.root();
    let reports = admin::gc(&root).with_context(|| format!("cache gc {}", root.display()))?;
    if t.json {
        print_json(&reports)?;
        return Ok(ExitCode::SUCCESS);
    }
    for r in &reports {
        println!(
            "{}: {} → {} rows ({} duplicate, {} damaged{}), {} → {} bytes",
            r.key,
            r.rows_before,
            r.rows_after,
            r.duplicate_rows,
            r.damaged_rows,
            if r.removed {
                ", older format: removed"
            } else {
                ""
            },
            r.bytes_before,
            r.bytes_after
        );
    }
    let before: u64 = reports.iter().map(|r| r.bytes_before).sum();
    let after: u64 = reports.iter().map(|r| r.bytes_after).sum();
    eprintln!(
        "cache gc: {} stores, {before} → {after} bytes in {}",
        reports.len(),
        root.display()
    );
    Ok(ExitCode::SUCCESS)
}
