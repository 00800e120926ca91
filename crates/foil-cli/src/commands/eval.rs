//! `foil eval`.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Instant;

use super::common_args::InputArgs;
use anyhow::{bail, Context};
use clap::Args;
use foil::eval::{
    compare, comparison_json, comparison_table, evaluate_files, evaluation_json, evaluation_table,
};
use foil_core::metrics::{EvalConfig, Evaluation, Measure, MeasureAt};
use foil_core::{InputPolicy, SkipReport};

#[derive(Debug, Args)]
pub struct EvalArgs {
    /// Qrels: BEIR TSV (query-id, corpus-id, score; header optional) or TREC (qid 0 docid rel).
    #[arg(long)]
    qrels: PathBuf,
    /// The TREC run to evaluate.
    #[arg(long, required_unless_present = "compare", conflicts_with = "compare")]
    run: Option<PathBuf>,
    /// Compare two runs A and B: means, difference (B − A), paired t-test and randomization test.
    #[arg(long, num_args = 2, value_names = ["A", "B"])]
    compare: Option<Vec<PathBuf>>,
    /// Print one JSON object (keys such as "ndcg@10", "p@10", "recall@100") instead of a table.
    #[arg(long)]
    json: bool,
    /// Also print the value of every measure for every query.
    #[arg(long)]
    per_query: bool,
    /// Measures to compute: ndcg, map, recall, p, mrr.
    #[arg(long, value_delimiter = ',', default_value = "ndcg,map,recall,p,mrr")]
    measures: Vec<Measure>,
    /// Cutoffs k for every measure.
    #[arg(long, value_delimiter = ',', default_value = "1,3,5,10,100,1000")]
    cutoffs: Vec<usize>,
    /// Lowest grade counted as relevant by the binary measures.
    #[arg(long, default_value_t = 1)]
    relevance_level: i32,
    /// Keep retrieved documents whose id equals the query id (BEIR removes them).
    #[arg(long)]
    keep_identical_ids: bool,
    #[command(flatten)]
    policy: InputArgs,
    /// Seed of the randomization test.
    #[arg(long, default_value_t = 42)]
    seed: u64,
    /// Number of random sign assignments in the randomization test.
    #[arg(long, default_value_t = 10_000)]
    trials: u32,
    /// Exit with status 1 when a mean is below a threshold, e.g. --fail-below ndcg@10=0.67
    /// (repeatable; applies to run B with --compare).
    #[arg(long, value_name = "MEASURE@K=VALUE")]
    fail_below: Vec<String>,
}

/// Parses `ndcg@10=0.67`.
fn parse_threshold(s: &str) -> anyhow::Result<(MeasureAt, f64)> {
    let (name, value) = s.split_once('=').context("expected MEASURE@K=VALUE")?;
    let (measure, k) = name.split_once('@').context("expected MEASURE@K=VALUE")?;
    let measure: Measure = measure.parse().map_err(anyhow::Error::msg)?;
    Ok((
        MeasureAt {
            measure,
            k: k.parse()?,
        },
        value.parse()?,
    ))
}

pub fn run(args: EvalArgs) -> anyhow::Result<ExitCode> {
    let started = Instant::now();
    let config = EvalConfig {
        measures: args.measures.clone(),
        cutoffs: args.cutoffs.clone(),
        relevance_level: args.relevance_level,
        keep_identical_ids: args.keep_identical_ids,
    };
    if config.cutoffs.contains(&0) {
        bail!("cutoffs must be at least 1");
    }
    let thresholds = args
        .fail_below
        .iter()
        .map(|s| parse_threshold(s).with_context(|| format!("bad --fail-below {s:?}")))
        .collect::<anyhow::Result<Vec<_>>>()?;
    let policy = InputPolicy {
        skip_invalid: args.policy.skip_invalid,
    };
    let mut skips = SkipReport::default();
    let checked: Evaluation;
    let mut stdout;
    match (&args.run, &args.compare) {
        (Some(run), _) => {
            let eval = evaluate_files(&args.qrels, run, &config, policy, &mut skips)?;
            if args.json {
                stdout = serde_json::to_string_pretty(&evaluation_json(&eval, args.per_query))?;
            } else {
                stdout = evaluation_table(&eval);
                if args.per_query {
                    for (q, values) in &eval.per_query {
                        for (m, v) in eval.measures.iter().zip(values) {
                            stdout.push_str(&format!("{m}\t{q}\t{v:.6}\n"));
                        }
                    }
                }
            }
            report(&eval, run);
            checked = eval;
        }
        (None, Some(pair)) => {
            let a = evaluate_files(&args.qrels, &pair[0], &config, policy, &mut skips)?;
            let b = evaluate_files(&args.qrels, &pair[1], &config, policy, &mut skips)?;
            report(&a, &pair[0]);
            report(&b, &pair[1]);
            let comparison = compare(&a, &b, args.trials, args.seed);
            stdout = if args.json {
                serde_json::to_string_pretty(&comparison_json(&comparison))?
            } else {
                comparison_table(&comparison)
            };
            checked = b;
        }
        (None, None) => bail!("give --run FILE or --compare A B"),
    }
    print!("{stdout}");
    if !stdout.ends_with('\n') {
        println!();
    }
    eprintln!(
        "eval: {} queries evaluated, {} measures, {}, {:.2}s",
        checked.num_queries(),
        checked.measures.len(),
        skips.summary(),
        started.elapsed().as_secs_f64()
    );
    let mut failed = false;
    for (m, min) in thresholds {
        match checked.mean_of(m) {
            Some(v) if v < min => {
                eprintln!("foil: check failed: {m} = {v:.4} < {min}");
                failed = true;
            }
            Some(_) => {}
            None => bail!("--fail-below names {m}, which was not computed"),
        }
    }
    Ok(if failed {
        ExitCode::from(1)
    } else {
        ExitCode::SUCCESS
    })
}

/// Logs what was not evaluated, so that no query disappears silently.
fn report(eval: &Evaluation, run: &std::path::Path) {
    if !eval.missing_queries.is_empty() {
        tracing::warn!(
            run = %run.display(),
            "{} judged queries have no results and are not evaluated (first: {:?})",
            eval.missing_queries.len(),
            eval.missing_queries.first()
        );
    }
    if eval.unjudged_queries > 0 {
        tracing::info!(run = %run.display(), "{} queries of the run have no judgments and are not evaluated", eval.unjudged_queries);
    }
    if eval.identical_ids_removed > 0 {
        tracing::info!(run = %run.display(), "removed {} results whose document id equals the query id", eval.identical_ids_removed);
    }
}
