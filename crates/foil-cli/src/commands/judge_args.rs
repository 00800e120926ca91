//! The flags that choose an LLM relevance judge (`foil judge`, `foil mine --judge`).

use std::path::PathBuf;

use clap::Args;
use foil::generate::GeneratorSpec;
use foil::judge::JudgeConfig;

use super::failures::MaxFailed;

#[derive(Debug, Args)]
pub struct JudgeArgs {
    /// The LLM judge: an installed model (`smollm2`, `qwen`), a GGUF file, or `openai` (with
    /// --judge-base-url and --judge-model). P(relevant) is read from its next-token
    /// probabilities of "yes" and "no".
    #[arg(long, value_name = "MODEL")]
    pub judge: Option<String>,
    /// The OpenAI-compatible server of --judge openai (with or without /v1); it must return
    /// top_logprobs.
    #[arg(long, value_name = "URL")]
    pub judge_base_url: Option<String>,
    /// The model name the server knows, for --judge openai.
    #[arg(long)]
    pub judge_model: Option<String>,
    /// The environment variable that holds the judge server's API key.
    #[arg(long, default_value = "OPENAI_API_KEY")]
    pub judge_api_key_env: String,
    /// Requests in flight at once to the judge server.
    #[arg(long, default_value_t = 4)]
    pub judge_concurrency: usize,
    /// A built-in judge template (yes-no) or a template file.
    #[arg(long, default_value = "yes-no")]
    pub judge_template: String,
    /// Cut passages to this many words in the judge's prompt.
    #[arg(long, default_value_t = 200)]
    pub judge_max_passage_words: usize,
    /// The judgment cache (default: $FOIL_CACHE/judge/cache.jsonl or
    /// ~/.cache/foil/judge/cache.jsonl); reruns skip what it holds.
    #[arg(long)]
    pub judge_cache: Option<PathBuf>,
    /// Pairs the judge may fail on (server errors) and the run still exit 0: a count or a
    /// share (`5%`). Beyond it the run exits 3; a rerun resumes from the judgment cache.
    #[arg(long, default_value = "0", value_name = "N|P%")]
    pub judge_max_failed: MaxFailed,
}

impl JudgeArgs {
    /// The judge's configuration, or `None` without --judge. `threads` is the local model's.
    pub fn config(&self, threads: Option<usize>) -> anyhow::Result<Option<JudgeConfig>> {
        let Some(judge) = &self.judge else {
            return Ok(None);
        };
        let generator = if judge == "openai" {
            let (Some(base_url), Some(model)) = (&self.judge_base_url, &self.judge_model) else {
                anyhow::bail!("--judge openai needs --judge-base-url and --judge-model");
            };
            GeneratorSpec::Openai {
                base_url: base_url.clone(),
                model: model.clone(),
                api_key_env: self.judge_api_key_env.clone(),
                concurrency: self.judge_concurrency,
                timeout_secs: 120.0,
                max_retries: 5,
            }
        } else {
            GeneratorSpec::Local {
                model: PathBuf::from(judge.strip_prefix("local:").unwrap_or(judge)),
                threads,
                max_batch: 16,
            }
        };
        let mut config = JudgeConfig::new(
            generator,
            self.judge_cache
                .clone()
                .unwrap_or_else(foil::judge::default_cache_file),
        );
        config.template = self.judge_template.clone();
        config.max_passage_words = Some(self.judge_max_passage_words);
        Ok(Some(config))
    }
}
