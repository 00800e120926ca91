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
}

impl Default for SamplingParams {
    fn default() -> Self {
        SamplingParams {
            temperature: 0.7,
            top_p: 0.9,
            max_tokens: 128,
            stop: Vec::new(),
            seed: 0,
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
