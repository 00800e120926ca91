//! [`GgufGenerator`]: the [`Generator`] that runs a GGUF model in-process.
//!
//! Requests are scheduled with continuous batching: up to `max_batch` sequences are live at a
//! time, each holding a [`KvCache`] slot. Every step packs, into one forward call, one row per
//! decoding sequence plus up to `prefill_rows` prompt tokens of newly admitted sequences (long
//! prompts are fed over several steps). A sequence that finishes frees its slot for the next
//! waiting request at the next step; the others keep decoding. Since each row's arithmetic is
//! independent of the others and each request samples with its own RNG seeded from
//! `params.seed`, a request's output does not depend on what shares its batch. Two prompt
//! prefixes are fed once: the one all prompts share (a template's instructions and examples),
//! and a whole prompt that several requests repeat (several samples of one chat, such as
//! queries per passage), whose positions are copied to each sample's slot once fed.

use std::collections::{HashMap, VecDeque};
use std::path::{Path, PathBuf};

use foil_core::generator::{
    FinishReason, GenerateError, Generation, GenerationRequest, Generator, TokenLogprob,
};
use foil_core::{Error, Result};

use crate::chat::ChatTemplate;
use crate::gguf::GgufFile;
use crate::llama::{KvCache, LoadOptions, Model, Segment};
use crate::sampler::{argmax, Sampler};
use crate::tokenizer::GgufTokenizer;

/// How a [`GgufGenerator`] runs.
#[derive(Clone, Debug)]
pub struct GgufOptions {
    /// Sequences generated together (live KV cache slots). Default 16.
    pub max_batch: usize,
    /// The context window in tokens (prompt + completion); default: the model's
    /// `context_length`. Prompts that do not fit fail with reason `"prompt_too_long"`.
    pub context_length: Option<usize>,
    /// The most prompt tokens fed in one forward call (bounds activation memory). Default 1024.
    pub prefill_rows: usize,
    /// Quantize activations in 32-value blocks as llama.cpp does (logits closer to llama.cpp's)
    /// instead of using the faster AVX512-VNNI kernels for Q8_0 weights. Default false.
    pub precise: bool,
}

impl Default for GgufOptions {
    fn default() -> Self {
        GgufOptions {
            max_batch: 16,
            context_length: None,
            prefill_rows: 1024,
            precise: false,
        }
    }
}

/// A local GGUF chat model (llama or qwen2 architecture, byte-level BPE tokenizer, ChatML
/// template) behind the [`Generator`] trait.
pub struct GgufGenerator {
    model: Model,
    tokenizer: GgufTokenizer,
    template: ChatTemplate,
    options: GgufOptions,
    context_length: usize,
    /// Tokens that end the assistant's turn.
    end_of_turn: Vec<u32>,
    name: String,
    fingerprint: String,
    path: PathBuf,
}

impl GgufGenerator {
    /// Loads the model, tokenizer and chat template of the GGUF file at `path` and hashes it.
    ///
    /// The model runs on as many threads as the caller's rayon pool has (the CLI's
    /// `--threads`): its own team of threads for a forward call's parallel steps. candle's own quantized kernels are kept single-threaded: `load` sets
    /// `CANDLE_NUM_THREADS=1` unless it is already set, because candle's spinning thread pool
    /// (sized once per process) stalls when the machine is shared.
    pub fn load(path: &Path, options: GgufOptions) -> Result<Self> {
        if std::env::var_os("CANDLE_NUM_THREADS").is_none() {
            std::env::set_var("CANDLE_NUM_THREADS", "1");
        }
        if options.max_batch == 0 || options.prefill_rows == 0 {
            return Err(Error::Invalid(
                "max_batch and prefill_rows must be at least 1".into(),
            ));
        }
        let sha256 = foil_core::fsutil::sha256_file(path)?;
        let mut file = GgufFile::open(path)?;
        let tokenizer = GgufTokenizer::from_gguf(&file)?;
        let template_text = file.string("tokenizer.chat_template")?;
        let template = ChatTemplate::from_template(&template_text, path)?;
        let model = Model::load(
            &mut file,
            LoadOptions {
                precise: options.precise,
                threads: rayon::current_num_threads(),
            },
        )?;
        if model.config.vocab != tokenizer.vocab_size() {
            return Err(Error::format(
                path,
                format!(
                    "the embedding has {} rows but the tokenizer {} tokens",
                    model.config.vocab,
                    tokenizer.vocab_size()
                ),
            ));
        }
        let context_length = options
            .context_length
            .unwrap_or(model.config.context_length)
            .max(1);
        let mut end_of_turn: Vec<u32> = tokenizer.eos.into_iter().collect();
        for t in ["<|im_end|>", "<|endoftext|>", "<|eot_id|>", "<|end|>"] {
            if let Some(id) = tokenizer.token_id(t) {
                if tokenizer.is_control(id) && !end_of_turn.contains(&id) {
                    end_of_turn.push(id);
                }
            }
        }
        let file_name = path
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        Ok(GgufGenerator {
            name: format!("gguf:{file_name}"),
            // Everything that changes an answer's bits: the file, the chat template, the
            // matrix kernels and the KV cache's precision.
            fingerprint: format!(
                "gguf sha256={sha256} template={} kernels={} kv=f16",
                template.identity(),
                model.kernels()
            ),
            model,
            tokenizer,
            template,
            options,
            context_length,
            end_of_turn,
            path: path.to_path_buf(),
        })
    }

    pub fn tokenizer(&self) -> &GgufTokenizer {
        &self.tokenizer
    }

    pub fn template(&self) -> &ChatTemplate {
        &self.template
    }

    pub fn model(&self) -> &Model {
        &self.model
    }

    /// The GGUF file this generator was loaded from.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The context window in tokens.
    pub fn context_length(&self) -> usize {
        self.context_length
    }

    /// The prompt token ids of a chat: the rendered template, tokenized (with BOS if the model
    /// asks for one).
    pub fn prompt_ids(&self, messages: &[foil_core::generator::ChatMessage]) -> Result<Vec<u32>> {
        let text = self.template.render(messages);
        let mut ids = self.tokenizer.encode(&text)?;
        if let (true, Some(bos)) = (self.tokenizer.add_bos, self.tokenizer.bos) {
            if ids.first() != Some(&bos) {
                ids.insert(0, bos);
            }
        }
        Ok(ids)
    }

    /// Greedy continuation of raw prompt ids for `n` tokens, stopping early at an end-of-turn
    /// token (which is included). For tests against reference implementations.
    pub fn greedy_ids(&self, prompt: &[u32], n: usize) -> Result<Vec<u32>> {
        let mut cache = KvCache::new(&self.model, 1);
        let mut out = Vec::new();
        let mut feed = prompt.to_vec();
        let mut pos = 0;
        while out.len() < n && !feed.is_empty() {
            let seg = Segment {
                seq: 0,
                start: pos,
                len: feed.len(),
                logits: true,
                prompt: pos < prompt.len(),
            };
            let logits = self.model.forward(&feed, &[seg], &mut cache)?;
            pos += feed.len();
            let t = argmax(&logits[0]);
            out.push(t);
            if self.end_of_turn.contains(&t) {
                break;
            }
            feed = vec![t];
        }
        Ok(out)
    }

    fn prepare(&self, request: &GenerationRequest) -> Result<Vec<u32>, GenerateError> {
        if request.messages.is_empty() {
            return Err(GenerateError::new("empty_chat", "the chat has no messages"));
        }
        let ids = self
            .prompt_ids(&request.messages)
            .map_err(|e| GenerateError::new("bad_request", e.to_string()))?;
        if ids.len() >= self.context_length {
            return Err(GenerateError::new(
                "prompt_too_long",
                format!(
                    "the prompt has {} tokens; the context holds {}",
                    ids.len(),
                    self.context_length
                ),
            ));
        }
        Ok(ids)
    }
}

/// A live sequence.
struct Live<'a> {
    request: usize,
    slot: usize,
    /// Prompt then generated tokens.
    tokens: Vec<u32>,
    prompt_len: usize,
    /// Positions already in the KV cache.
    fed: usize,
    bytes: Vec<u8>,
    sampler: Sampler,
    request_ref: &'a GenerationRequest,
    /// Sum of the log-probabilities of the generated tokens (end of turn excluded).
    logprob_sum: f64,
    /// The most likely first tokens, when the request asks for them.
    top_logprobs: Vec<TokenLogprob>,
    /// Requests with the same prompt and the slots held for them, forked from this sequence
    /// once its prompt is fed.
    followers: Vec<(usize, usize)>,
}

impl<'a> Live<'a> {
    fn new(request_ref: &'a GenerationRequest, request: usize, slot: usize, ids: Vec<u32>) -> Self {
        let p = &request_ref.params;
        Live {
            request,
            slot,
            prompt_len: ids.len(),
            tokens: ids,
            fed: 0,
            bytes: Vec::new(),
            sampler: Sampler::new(p.temperature, p.top_p, p.seed),
            request_ref,
            logprob_sum: 0.0,
            top_logprobs: Vec::new(),
            followers: Vec::new(),
        }
    }

    fn completion(&self) -> usize {
        self.tokens.len() - self.prompt_len
    }
}

/// Requests that share one prompt: it is fed once (for `request`) and each follower, with a
/// slot of its own, samples from it.
struct PromptGroup {
    request: usize,
    ids: Vec<u32>,
    followers: Vec<usize>,
}

/// Groups requests with identical prompts (several samples of one chat), at most `slots` to a
/// group, in the order of each group's first request.
fn group_same_prompts(prepared: Vec<(usize, Vec<u32>)>, slots: usize) -> VecDeque<PromptGroup> {
    let mut groups: Vec<PromptGroup> = Vec::new();
    let mut open: HashMap<Vec<u32>, usize> = HashMap::new();
    for (request, ids) in prepared {
        match open.get(&ids) {
            Some(&g) if groups[g].followers.len() + 1 < slots => groups[g].followers.push(request),
            _ => {
                open.insert(ids.clone(), groups.len());
                groups.push(PromptGroup {
                    request,
                    ids,
                    followers: Vec::new(),
                });
            }
        }
    }
    groups.into()
}

impl Generator for GgufGenerator {
    fn name(&self) -> &str {
        &self.name
    }

    fn fingerprint(&self) -> String {
        self.fingerprint.clone()
    }

    fn generate(&self, requests: &[GenerationRequest]) -> Vec<Result<Generation, GenerateError>> {
        let mut results: Vec<Option<Result<Generation, GenerateError>>> =
            (0..requests.len()).map(|_| None).collect();
        let mut prepared = Vec::new();
        for (i, r) in requests.iter().enumerate() {
            match self.prepare(r) {
                Ok(ids) if r.params.max_tokens == 0 => {
                    results[i] = Some(Ok(Generation::text("", FinishReason::Length, ids.len(), 0)))
                }
                Ok(ids) => prepared.push((i, ids)),
                Err(e) => results[i] = Some(Err(e)),
            }
        }
        let slots = self.options.max_batch.min(prepared.len()).max(1);
        let mut queue = group_same_prompts(prepared, slots);
        let mut cache = KvCache::new(&self.model, slots);
        // The prompts' common prefix (a template's instructions and few-shot examples) is
        // computed once and copied into each slot. Rows are independent in the forward pass,
        // so the cached positions are the same numbers a full prefill would compute.
        let (prefix, prefix_len) = match self.shared_prefix(queue.iter().map(|g| g.ids.as_slice()))
        {
            Some(len) => {
                let mut prefix = KvCache::new(&self.model, 1);
                let ids = &queue[0].ids[..len];
                let mut fed = 0;
                let mut failed = None;
                while fed < len && failed.is_none() {
                    let n = (len - fed).min(self.options.prefill_rows);
                    let seg = Segment {
                        seq: 0,
                        start: fed,
                        len: n,
                        logits: false,
                        prompt: true,
                    };
                    if let Err(e) = self.model.forward(&ids[fed..fed + n], &[seg], &mut prefix) {
                        failed = Some(e);
                    }
                    fed += n;
                }
                match failed {
                    None => (Some(prefix), len),
                    Some(e) => {
                        tracing::warn!(error = %e, "shared prompt prefix failed; prefilling each prompt whole");
                        (None, 0)
                    }
                }
            }
            None => (None, 0),
        };
        let mut free: Vec<usize> = (0..slots).rev().collect();
        let mut live: Vec<Live> = Vec::new();

        loop {
            // Admit the next prompt when there is a slot for it and for each of its samples.
            while queue
                .front()
                .is_some_and(|g| free.len() > g.followers.len())
            {
                let Some(group) = queue.pop_front() else {
                    break;
                };
                let slot = free.pop().expect("checked: a free slot");
                let followers: Vec<(usize, usize)> = group
                    .followers
                    .iter()
                    .map(|&r| (r, free.pop().expect("checked: a slot per sample")))
                    .collect();
                let fed = match &prefix {
                    Some(prefix) => {
                        cache.copy_prefix(slot, prefix, 0, prefix_len);
                        prefix_len
                    }
                    None => {
                        cache.clear(slot);
                        0
                    }
                };
                // Room for the prompt and the longest answer: one allocation per slot.
                let positions = (group.ids.len() + requests[group.request].params.max_tokens)
                    .min(self.context_length);
                cache.reserve(slot, positions);
                for &(_, follower) in &followers {
                    cache.reserve(follower, positions);
                }
                let mut s = Live::new(&requests[group.request], group.request, slot, group.ids);
                s.fed = fed;
                s.followers = followers;
                live.push(s);
            }
            if live.is_empty() {
                break;
            }

            // Pack this step's rows: decoding sequences one row each, prompts within budget.
            let mut budget = self.options.prefill_rows;
            let mut tokens = Vec::new();
            let mut segments = Vec::new();
            let mut fed_live = Vec::new();
            for (li, s) in live.iter().enumerate() {
                let pending = s.tokens.len() - s.fed;
                let prefill = s.fed < s.prompt_len;
                let n = if prefill {
                    pending.min(budget)
                } else {
                    pending
                };
                if n == 0 {
                    continue;
                }
                if prefill {
                    budget -= n;
                }
                segments.push(Segment {
                    seq: s.slot,
                    start: s.fed,
                    len: n,
                    logits: s.fed + n == s.tokens.len(),
                    prompt: prefill,
                });
                tokens.extend_from_slice(&s.tokens[s.fed..s.fed + n]);
                fed_live.push((li, n));
            }
            let logits = match self.model.forward(&tokens, &segments, &mut cache) {
                Ok(l) => l,
                Err(e) => {
                    let waiting = live
                        .drain(..)
                        .flat_map(|s| {
                            std::iter::once(s.request).chain(s.followers.into_iter().map(|f| f.0))
                        })
                        .chain(
                            queue
                                .drain(..)
                                .flat_map(|g| std::iter::once(g.request).chain(g.followers)),
                        );
                    for i in waiting {
                        results[i] = Some(Err(GenerateError::new("model_error", e.to_string())));
                    }
                    break;
                }
            };

            let mut logits = logits.into_iter();
            let mut done = Vec::new();
            let mut forked = Vec::new();
            for ((li, n), seg) in fed_live.into_iter().zip(&segments) {
                let s = &mut live[li];
                s.fed += n;
                if !seg.logits {
                    continue;
                }
                let Some(l) = logits.next() else { break };
                let log_norm = log_sum_exp(&l);
                // The prompt's other samples start here: its positions are copied into their
                // slots and each draws its first token from these logits with its own seed.
                for (request, slot) in std::mem::take(&mut s.followers) {
                    cache.copy_slot(slot, s.slot, s.fed);
                    let mut f = Live::new(&requests[request], request, slot, s.tokens.clone());
                    f.fed = s.fed;
                    let finish = self.take(&mut f, &l, log_norm);
                    forked.push((f, finish));
                }
                if let Some(finish) = self.take(s, &l, log_norm) {
                    done.push((li, finish));
                }
            }
            for (f, finish) in forked {
                if let Some(finish) = finish {
                    done.push((live.len(), finish));
                }
                live.push(f);
            }
            for (li, (text, finish)) in done.into_iter().rev() {
                let s = live.swap_remove(li);
                free.push(s.slot);
                let completion = s.completion();
                results[s.request] = Some(Ok(Generation {
                    text,
                    finish,
                    prompt_tokens: s.prompt_len,
                    completion_tokens: completion,
                    mean_logprob: (completion > 0).then(|| s.logprob_sum / completion as f64),
                    top_logprobs: s.top_logprobs,
                }));
            }
        }
        results
            .into_iter()
            .map(|r| r.unwrap_or_else(|| Err(GenerateError::new("model_error", "not generated"))))
            .collect()
    }
}

/// Shorter shared prefixes are not worth a separate forward pass.
const MIN_SHARED_PREFIX: usize = 32;

/// ln Σ exp(logits), in f64.
fn log_sum_exp(logits: &[f32]) -> f64 {
    let max = logits.iter().copied().fold(f32::NEG_INFINITY, f32::max) as f64;
    max + logits
        .iter()
        .map(|&l| (l as f64 - max).exp())
        .sum::<f64>()
        .ln()
}

impl GgufGenerator {
    /// The length of the token prefix all `prompts` share (when there are two or more and it
    /// is worth computing once), leaving at least one token of each prompt to feed.
    fn shared_prefix<'p>(&self, mut prompts: impl Iterator<Item = &'p [u32]>) -> Option<usize> {
        let first = prompts.next()?;
        let mut len = first.len();
        let mut shortest = first.len();
        let mut count = 1;
        for p in prompts {
            len = len.min(first.iter().zip(p).take_while(|(a, b)| a == b).count());
            shortest = shortest.min(p.len());
            count += 1;
        }
        let len = len.min(shortest.saturating_sub(1));
        (count >= 2 && len >= MIN_SHARED_PREFIX).then_some(len)
    }

    /// The `k` most likely tokens of `logits` (ties: lower id first) with their
    /// log-probabilities, decoded to text.
    fn top_tokens(&self, logits: &[f32], log_norm: f64, k: usize) -> Vec<TokenLogprob> {
        let mut ids: Vec<u32> = (0..logits.len() as u32).collect();
        let k = k.min(ids.len());
        let by_logit = |a: &u32, b: &u32| {
            logits[*b as usize]
                .total_cmp(&logits[*a as usize])
                .then(a.cmp(b))
        };
        if k < ids.len() {
            ids.select_nth_unstable_by(k, by_logit);
            ids.truncate(k);
        }
        ids.sort_by(by_logit);
        ids.into_iter()
            .map(|id| {
                let mut bytes = Vec::new();
                self.tokenizer.decode_bytes(&[id], &mut bytes);
                TokenLogprob {
                    token: String::from_utf8_lossy(&bytes).into_owned(),
                    logprob: (logits[id as usize] as f64 - log_norm) as f32,
                }
            })
            .collect()
    }

    /// Samples `s`'s next token from `logits` (whose log-normalizer is `log_norm`), records
    /// its log-probability and appends it; returns how the sequence ended, if it did.
    fn take(&self, s: &mut Live, logits: &[f32], log_norm: f64) -> Option<(String, FinishReason)> {
        let t = s.sampler.sample(logits);
        let want_top = s.request_ref.params.top_logprobs;
        if s.completion() == 0 && want_top > 0 {
            s.top_logprobs = self.top_tokens(logits, log_norm, want_top);
        }
        if !self.end_of_turn.contains(&t) {
            s.logprob_sum += logits[t as usize] as f64 - log_norm;
        }
        self.step(s, t)
    }

    /// Takes sampled token `t` for `s`; returns the text and finish reason when `s` is done.
    fn step(&self, s: &mut Live, t: u32) -> Option<(String, FinishReason)> {
        let params = &s.request_ref.params;
        if self.end_of_turn.contains(&t) {
            return Some((
                String::from_utf8_lossy(&s.bytes).into_owned(),
                FinishReason::Stop,
            ));
        }
        s.tokens.push(t);
        self.tokenizer.decode_bytes(&[t], &mut s.bytes);
        let text = String::from_utf8_lossy(&s.bytes);
        let first_stop = params
            .stop
            .iter()
            .filter(|p| !p.is_empty())
            .filter_map(|p| text.find(p.as_str()))
            .min();
        if let Some(at) = first_stop {
            return Some((text[..at].to_string(), FinishReason::Stop));
        }
        if s.completion() >= params.max_tokens || s.tokens.len() >= self.context_length {
            return Some((text.into_owned(), FinishReason::Length));
        }
        None
    }
}
