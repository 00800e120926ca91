//! The answers of an OpenAI-compatible server, for scripts to send or spoil: the right
//! `/v1/embeddings` vectors (derived from each input text, so a test can recompute them) and a
//! `/v1/chat/completions` completion.

use serde_json::{json, Value};

use crate::{Reply, Request};

/// The size of the mock's vectors when a request does not ask for `dimensions`.
pub const NATIVE_DIM: usize = 8;

/// 200 with the right vectors for an embeddings `request`, `data` in reverse order with their
/// `index`.
pub fn embeddings(request: &Request) -> Reply {
    Reply::ok(embeddings_body(request, 0, 0))
}

/// The right answer to an embeddings `request`, less `missing` vectors and with `extra_dims`
/// more components in each: the wrong answers when either is not 0.
pub fn embeddings_body(request: &Request, missing: usize, extra_dims: usize) -> Value {
    let dim = request.body["dimensions"]
        .as_u64()
        .map_or(NATIVE_DIM, |d| d as usize)
        + extra_dims;
    let inputs = request.inputs();
    let keep = inputs.len().saturating_sub(missing);
    let data: Vec<Value> = inputs
        .iter()
        .enumerate()
        .take(keep)
        .rev()
        .map(|(i, text)| json!({"object": "embedding", "index": i, "embedding": vector(text, dim)}))
        .collect();
    json!({"object": "list", "model": request.body["model"], "data": data})
}

/// The vector the mock gives `text`: components in [-1, 1) from a hash of the text.
pub fn vector(text: &str, dim: usize) -> Vec<f32> {
    (0..dim)
        .map(|i| {
            let mut h: u64 = 0xcbf2_9ce4_8422_2325 ^ (i as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15);
            for b in text.bytes() {
                h = (h ^ b as u64).wrapping_mul(0x0100_0000_01b3);
            }
            h ^= h >> 29;
            ((h >> 40) as f32 / (1u64 << 24) as f32) * 2.0 - 1.0
        })
        .collect()
}

/// 200 with a chat completion whose message is `content`, finished by `stop`, with that usage.
pub fn chat_completion(content: &str, prompt_tokens: u64, completion_tokens: u64) -> Reply {
    Reply::ok(json!({
        "id": "mock", "object": "chat.completion",
        "choices": [{"index": 0, "message": {"role": "assistant", "content": content}, "finish_reason": "stop"}],
        "usage": {"prompt_tokens": prompt_tokens, "completion_tokens": completion_tokens, "total_tokens": prompt_tokens + completion_tokens},
    }))
}
