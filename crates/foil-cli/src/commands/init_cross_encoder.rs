//! `foil init-cross-encoder`.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use clap::Args;

#[derive(Debug, Args)]
pub struct InitCrossEncoderArgs {
    /// The BERT folder (or installed model name) whose encoder and pooler the cross-encoder starts from.
    #[arg(long, default_value = "all-MiniLM-L6-v2")]
    base: PathBuf,
    /// The folder to write (a Hugging Face BertForSequenceClassification checkpoint, one logit).
    #[arg(long)]
    output: PathBuf,
    /// Seed of the classifier head's initialization.
    #[arg(long, default_value_t = 0)]
    seed: u64,
}

pub fn run(args: InitCrossEncoderArgs) -> anyhow::Result<ExitCode> {
    let base = foil::encoder_spec::resolve_model(&args.base)?;
    foil_candle::cross_encoder::init_checkpoint(&base, &args.output, args.seed)
        .context("cannot write the cross-encoder checkpoint")?;
    eprintln!(
        "init-cross-encoder: {} + a one-logit head (seed {}) -> {}",
        base.display(),
        args.seed,
        args.output.display()
    );
    Ok(ExitCode::SUCCESS)
}
