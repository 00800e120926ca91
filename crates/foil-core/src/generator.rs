//! The [`Generator`] trait: anything that continues a chat — a local GGUF model run by foil,
//! an OpenAI-compatible server, a deterministic fake in tests.
//!
//! Requests carry their own sampling parameters and seed, so a request's output does not
//! depend on which other requests share its batch; that is what lets a killed generation run
//! resume and still give the same bytes.

use serde::{Deserialize, Serialize};

/// Who wrote a chat message.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    System,
    User,
    Assistant,
}

/// One message of a chat.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct ChatMessage {
    pub role: Role,
    pub content: String,
}

impl ChatMessage {
    pub fn system(content: impl Into<String>) -> Self {
        ChatMessage {
            role: Role::System,
            content: content.into(),
        }
    }

    pub fn user(content: impl Into<String>) -> Self {
        ChatMessage {
            role: Role::User,
            content: content.into(),
        }
    }

    pub fn assistant(content: impl Into<String>) -> Self {
        ChatMessage {
            role: Role::Assistant,
            content: content.into(),
        }
    }
}

/// How to sample a continuation. `temperature == 0` means greedy decoding.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct SamplingParams {
    pub temperature: f32,
    /// Nucleus sampling: keep the smallest set of tokens whose probability reaches `top_p`.
    pub top_p: f32,
    /// The most tokens to generate.
    pub max_tokens: usize,
    /// Generation stops before the first occurrence of any of these strings, which is not
    /// part of the returned text.
    pub stop: Vec<String>,
    /// Seeds this request's sampler (local backends; sent as `seed` to servers).
    pub seed: u64,
    /// Report the mean log-probability of the generated tokens ([`Generation::mean_logprob`];
    /// servers are asked for `logprobs`). Local models always report it.
    #[serde(default, skip_serializing_if = "is_false")]
    pub logprobs: bool,
    /// Report this many most likely first tokens of the answer with their log-probabilities
    /// ([`Generation::top_logprobs`]; servers are asked for `top_logprobs`), e.g. to read a
    /// yes/no judgment from the next-token distribution. 0: none.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub top_logprobs: usize,
}

fn is_false(b: &bool) -> bool {
    !*b
}

fn is_zero(n: &usize) -> bool {
    *n == 0
}

impl Default for SamplingParams {
    fn default() -> Self {
        SamplingParams {
            temperature: 0.7,
            top_p: 0.9,
            max_tokens: 128,
            stop: Vec::new(),
            seed: 0,
            logprobs: false,
            top_logprobs: 0,
        }
    }
}

/// One chat to continue.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct GenerationRequest {
    pub messages: Vec<ChatMessage>,
    pub params: SamplingParams,
}

/// Why generation ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum FinishReason {
    /// The model ended its turn or a stop string appeared.
    Stop,
    /// `max_tokens` was reached.
    Length,
}

/// A continuation.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Generation {
    pub text: String,
    pub finish: FinishReason,
    pub prompt_tokens: usize,
    pub completion_tokens: usize,
    /// The mean natural-log probability of the generated tokens under the model's own
    /// distribution (temperature 1, no nucleus cut) — InPars' filter score. `None` when the
    /// backend did not report it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mean_logprob: Option<f64>,
    /// The most likely first tokens of the answer, most likely first, when asked for
    /// ([`SamplingParams::top_logprobs`]).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub top_logprobs: Vec<TokenLogprob>,
}

impl Generation {
    /// A plain answer without log-probabilities.
    pub fn text(
        text: impl Into<String>,
        finish: FinishReason,
        prompt_tokens: usize,
        completion_tokens: usize,
    ) -> Self {
        Generation {
            text: text.into(),
            finish,
            prompt_tokens,
            completion_tokens,
            mean_logprob: None,
            top_logprobs: Vec::new(),
        }
    }
}

/// A candidate token and its natural-log probability.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct TokenLogprob {
    pub token: String,
    pub logprob: f32,
}

/// Why one request of a batch failed; the others are unaffected.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, thiserror::Error)]
#[error("{message}")]
pub struct GenerateError {
    /// A short machine-readable reason (`"http_500"`, `"timeout"`, `"bad_response"`,
    /// `"prompt_too_long"`…), counted in reports.
    pub reason: String,
    /// A human-readable message. Never contains secrets.
    pub message: String,
}

impl GenerateError {
    pub fn new(reason: impl Into<String>, message: impl Into<String>) -> Self {
        GenerateError {
            reason: reason.into(),
            message: message.into(),
        }
    }
}

/// Continues chats. Implementations batch and use threads or connections behind this call.
pub trait Generator: Send + Sync {
    /// A short name for logs and manifests.
    fn name(&self) -> &str;
    /// Everything that determines the output apart from the request (weights hash, chat
    /// template, server URL and model name), for caches and manifests. Never a secret.
    fn fingerprint(&self) -> String;
    /// Continues each request; one result per request, in order.
    fn generate(&self, requests: &[GenerationRequest]) -> Vec<Result<Generation, GenerateError>>;
}
